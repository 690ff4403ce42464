from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from proxy.models import UpstreamBackend, UpstreamLink

STATUS_FIELDS = ("state", "status_since", "queue_depth", "last_error", "backend_boot_status")


def _state(link: UpstreamLink) -> str:
    if not link.pk:
        return "—"
    if not (link.enabled and link.backend.enabled):
        return "disabled"
    # A link runs only while its charger is connected (the flags of a crashed process are stale).
    if link.connected and link.charger.connected:
        return "connected"
    return "not connected" if link.charger.connected else "not connected (charger offline)"


def _queue_depth(link: UpstreamLink) -> int:
    depth = getattr(link, "depth", None)
    return int(depth) if depth is not None else link.queue.count()


class UpstreamLinkInline(admin.TabularInline):
    model = UpstreamLink
    extra = 0
    fields = ("charger", "role", "upstream_identity", "enabled", *STATUS_FIELDS)
    readonly_fields = STATUS_FIELDS
    autocomplete_fields = ("charger",)

    @admin.display(description="queue depth")
    def queue_depth(self, link: UpstreamLink) -> int:
        return _queue_depth(link) if link.pk else 0

    @admin.display(description="state")
    def state(self, link: UpstreamLink) -> str:
        return _state(link)


@admin.register(UpstreamBackend)
class UpstreamBackendAdmin(admin.ModelAdmin):
    list_display = ("name", "url", "enabled", "links_connected", "dropped_meter_values", "dropped_messages")
    readonly_fields = ("dropped_meter_values", "dropped_messages")
    inlines = [UpstreamLinkInline]
    fieldsets = (
        (None, {"fields": ("name", "url", "enabled", "password", "verify_tls", "ping_interval_s",
                           "message_timeout_s")}),
        ("Transaction messages", {"fields": ("transaction_message_attempts", "transaction_message_retry_interval_s",
                                             "queue_max_messages", "dropped_meter_values", "dropped_messages")}),
        ("Command policy (what this backend may make the chargers do)", {"fields": (
            "policy_read", "policy_remote_transactions", "policy_reset", "policy_configuration", "policy_firmware",
            "policy_local_list", "policy_reservation", "policy_smart_charging", "policy_data_transfer")}),
    )

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "password":
            kwargs["widget"] = forms.PasswordInput(render_value=True)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="links connected")
    def links_connected(self, backend: UpstreamBackend) -> str:
        links = list(backend.links.values_list("connected", flat=True))
        return f"{sum(links)} / {len(links)}"


@admin.register(UpstreamLink)
class UpstreamLinkAdmin(admin.ModelAdmin):
    list_display = ("charger", "backend", "role", "enabled", "state", "status_since", "queue_depth", "last_error")
    list_filter = ("backend", "role", "connected", "enabled")
    search_fields = ("charger__charge_point_id", "upstream_identity", "backend__name")
    fields = ("charger", "backend", "role", "upstream_identity", "enabled", *STATUS_FIELDS)
    readonly_fields = STATUS_FIELDS
    autocomplete_fields = ("charger",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[UpstreamLink]:
        return super().get_queryset(request).select_related("charger", "backend").annotate(depth=Count("queue"))

    @admin.display(description="queue depth")
    def queue_depth(self, link: UpstreamLink) -> int:
        return _queue_depth(link)

    @admin.display(description="state")
    def state(self, link: UpstreamLink) -> str:
        return _state(link)
