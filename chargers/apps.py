from django.apps import AppConfig


class ChargersConfig(AppConfig):
    name = "chargers"
    verbose_name = "Chargers"

    def ready(self) -> None:
        from chargers.configuration import boot_step_auto_configuration
        from chargers.hooks import add_boot_step

        add_boot_step(boot_step_auto_configuration)
