from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = "Upstream CPO backends"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chargers.hooks import add_relay_opener
        from proxy.relay import open_relay

        add_relay_opener(open_relay)
