"""Websocket routes of the dashboard, mounted under ws/dashboard/ by evce/asgi.py."""

from django.urls import path

from dashboard.consumers import LiveConsumer

websocket_urlpatterns = [
    path("site/", LiveConsumer.as_asgi(), {"page": "site"}),
    path("charger/<int:pk>/", LiveConsumer.as_asgi(), {"page": "charger"}),
    path("session/<int:pk>/", LiveConsumer.as_asgi(), {"page": "session"}),
]
