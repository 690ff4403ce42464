"""Integrations (API tokens) in the admin: created, shown once, revoked; budgets visible."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from api.models import Integration, SetpointRecord, ZoneControl
from evce import clock


@admin.register(Integration)
class IntegrationAdmin(admin.ModelAdmin):
    list_display = ["name", "scope", "token_hint", "heartbeat_interval_s", "last_heartbeat_at", "last_used_at",
                    "revoked_at"]
    readonly_fields = ["token_hint", "last_heartbeat_at", "last_used_at", "created_at"]
    actions = ["revoke", "rotate_token"]

    def save_model(self, request: HttpRequest, obj: Integration, form: Any, change: bool) -> None:
        # The token exists only in this message: it is stored hashed.
        raw = obj.issue_token() if not obj.token_hash else None
        super().save_model(request, obj, form, change)
        if raw:
            messages.warning(request, f"Token for {obj.name} (copy it now, it is not shown again): {raw}")

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[Integration]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=clock.now())
        self.message_user(request, f"{count} token(s) revoked.")

    @admin.action(description="Issue a new token (the old one stops working)", permissions=["change"])
    def rotate_token(self, request: HttpRequest, queryset: QuerySet[Integration]) -> None:
        for integration in queryset:
            raw = integration.issue_token()
            integration.save(update_fields=["token_hash", "token_hint"])
            messages.warning(request, f"New token for {integration.name} (copy it now): {raw}")


@admin.register(ZoneControl)
class ZoneControlAdmin(admin.ModelAdmin):
    list_display = ["zone", "integration", "current_a", "power_kw", "written_at", "valid_until", "failsafe_since"]
    readonly_fields = ["zone", "integration", "current_a", "power_kw", "written_at", "valid_until", "failsafe_since"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(SetpointRecord)
class SetpointRecordAdmin(admin.ModelAdmin):
    list_display = ["written_at", "zone", "integration", "current_a", "power_kw", "valid_until", "released"]
    list_filter = ["integration", "zone", "released"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
