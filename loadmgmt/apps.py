from django.apps import AppConfig


class LoadmgmtConfig(AppConfig):
    name = "loadmgmt"
    verbose_name = "Load management"

    def ready(self) -> None:
        from chargers.hooks import add_boot_step
        from loadmgmt.control import boot_step_safe_default

        # Safety first: the safe default profile goes out before anything else after a boot.
        add_boot_step(boot_step_safe_default, first=True)
        self._show_limits_on_charger_page()

    @staticmethod
    def _show_limits_on_charger_page() -> None:
        from chargers.admin import ChargerAdmin
        from loadmgmt.admin import AppliedLimitInline

        if AppliedLimitInline not in ChargerAdmin.inlines:
            ChargerAdmin.inlines = [*ChargerAdmin.inlines, AppliedLimitInline]
