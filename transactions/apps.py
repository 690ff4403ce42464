from django.apps import AppConfig


class TransactionsConfig(AppConfig):
    name = "transactions"
    verbose_name = "Charging sessions"

    def ready(self) -> None:
        from chargers.hooks import add_boot_step
        from transactions.hooks import boot_step_close_open_sessions

        # Early: sessions left open by the reboot are closed before anything else looks at them.
        add_boot_step(boot_step_close_open_sessions, first=True)
