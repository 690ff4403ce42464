from django.apps import AppConfig


class EvceConfig(AppConfig):
    """The project package: registers the project-wide database lookups."""

    name = "evce"

    def ready(self) -> None:
        from evce import lookups  # noqa: F401, PLC0415 - registers `__among` on every field
