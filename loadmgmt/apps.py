from django.apps import AppConfig


class LoadmgmtConfig(AppConfig):
    name = "loadmgmt"
    verbose_name = "Load management"

    def ready(self) -> None:
        from chargers.hooks import add_boot_step, add_call_outcome_hook, add_session_change_listener
        from loadmgmt.apply import OUTCOME_HOOK
        from loadmgmt.control import boot_step_safe_default
        from loadmgmt.tasks import limit_outcome_then_rebalance, rebalance_for_sessions

        # Safety first: the safe default profile goes out before anything else after a boot.
        add_boot_step(boot_step_safe_default, first=True)
        # A car that arrives or leaves is re-balanced at once, not at the next loop period.
        add_session_change_listener(rebalance_for_sessions)
        # Answers to charging profiles are recorded where they arrive; a lower limit coming into
        # force frees room, so the increases that waited for it go out at once.
        add_call_outcome_hook(OUTCOME_HOOK, limit_outcome_then_rebalance, blocking=False)  # it only queues
        self._show_limits_on_charger_page()

    @staticmethod
    def _show_limits_on_charger_page() -> None:
        from chargers.admin import ChargerAdmin
        from loadmgmt.admin import LimitStateInline

        if LimitStateInline not in ChargerAdmin.inlines:
            ChargerAdmin.inlines = [*ChargerAdmin.inlines, LimitStateInline]
