"""Display formats (FORMAT_MODULE_PATH): the admin shows times to the second, as operators read logs."""
