"""ASGI entry point: HTTP (admin, API, dashboard) and the OCPP websocket endpoint."""

from __future__ import annotations

import os

from evce import gctune

# No collections while the process imports (evce/gctune.py): `gctune.tune` resumes them below.
gctune.pause_for_start()

from django.core.asgi import get_asgi_application  # noqa: E402

from evce import apps as evce_apps  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evce.settings")
# The admin's modules load with the URLs, on the first HTTP request (evce.apps.AdminConfig):
# chargers reconnecting after a restart wait for the start, not for the admin.
evce_apps.DISCOVER_ADMIN_AT_START = False
django_http = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402 - after Django setup
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402 - after Django setup
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import re_path  # noqa: E402

from chargers.consumers import OcppConsumer, UnknownPathConsumer  # noqa: E402
from chargers.inbox import withdraw_at_shutdown  # noqa: E402
from chargers.writebuffer import flush_at_shutdown  # noqa: E402
from dashboard.routing import websocket_urlpatterns as dashboard_websockets  # noqa: E402
from evce import warmup  # noqa: E402

websocket_urls = [
    # The charge point identity is the last path segment (OCPP-J 1.6 §3.1.1). Every
    # path under ocpp/ reaches the consumer, which reads the identity from the raw path
    # (decoded once) and refuses a bad one with a log line (chargers/identity.py);
    # anything else is refused too, instead of the router's "no route" 500.
    re_path(r"^ocpp/", OcppConsumer.as_asgi()),
    # Live dashboard pages: the user's session (cookie) and an Origin check against ALLOWED_HOSTS.
    re_path(r"^ws/dashboard/", AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(dashboard_websockets)))),
    re_path(r"", UnknownPathConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_http) if settings.SERVE_STATIC else django_http,
        "websocket": URLRouter(websocket_urls),
    }
)

# When the server stops: the buffered writes are written, and other processes learn at once
# that this one's connections are gone (its liveness key, chargers/inbox.py).
flush_at_shutdown()
withdraw_at_shutdown()
# Started: what the first chargers would load is loaded now (evce/warmup.py), and what
# exists then lives as long as the process (evce/gctune.py).
warmup.limit_malloc_arenas(settings.MALLOC_ARENAS)
warmup.warm_up()
warmup.open_database_when_running()
gctune.tune(settings.GC_THRESHOLDS)
