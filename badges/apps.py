from django.apps import AppConfig


class BadgesConfig(AppConfig):
    name = "badges"
    verbose_name = "Badges"

    def ready(self) -> None:
        from badges.local_list import boot_step_local_list
        from chargers.hooks import add_boot_step

        # After the automatic configuration, whose GetConfiguration tells the list limits.
        add_boot_step(boot_step_local_list)
