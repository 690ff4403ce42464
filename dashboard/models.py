"""The dashboard has no data of its own: only the permissions its three roles are built from."""

from __future__ import annotations

from django.db import models


class DashboardAccess(models.Model):
    """Holder of the dashboard's permissions (no table: a permission needs a content type)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_site", "Can see the operator dashboard: site, chargers, sessions, logs, health"),
            ("operate_chargers", "Can send commands to chargers (reset, remote start/stop, unlock, …)"),
            ("configure_chargers", "Can change chargers' configuration keys (ChangeConfiguration)"),
        ]

    def __str__(self) -> str:
        return "dashboard access"
