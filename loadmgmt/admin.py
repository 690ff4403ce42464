from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from loadmgmt.models import LimitState, Setpoint, SiteSettings, TimeOfUseRule, Zone


@admin.register(SiteSettings)
class SiteSettingsAdmin(admin.ModelAdmin):
    list_display = ["__str__", "allocation_mode", "shedding_policy", "rotation_period_s", "loop_period_s"]
    fieldsets = [
        ("Sharing", {"fields": ["allocation_mode", "shedding_policy", "rotation_period_s", "min_on_s", "min_off_s"]}),
        ("Control loop", {"fields": ["loop_period_s", "hysteresis_a", "unused_margin_a", "overdraw_tolerance_a",
                                     "measurement_max_age_s", "measurement_window_s", "car_response_s",
                                     "answer_timeout_s", "fallback_current_a", "setpoint_retention_days"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not SiteSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """One site, one form: the list opens the settings themselves, created with the defaults if missing
        (as the control loop would); a user who may not change them gets them read-only."""
        settings = SiteSettings.objects.first()
        if settings is None and self.has_change_permission(request):
            settings = SiteSettings.load()
        if settings is None or not self.has_view_or_change_permission(request):
            return super().changelist_view(request, extra_context)
        return HttpResponseRedirect(reverse("admin:loadmgmt_sitesettings_change", args=[settings.pk]))


class TimeOfUseInline(admin.TabularInline):
    model = TimeOfUseRule
    extra = 0


def larger_than_parent(zone: Zone) -> list[str]:
    """Limits of `zone` above its parent's, or its children's above its own: allowed (the parent's
    limit is what counts) but most likely a typing error, so the admin warns."""
    pairs = [(zone, zone.parent)] if zone.parent is not None else []
    pairs += [(child, zone) for child in zone.children.all()] if zone.pk else []
    found = []
    for child, parent in pairs:
        for field, unit in (("max_current_a", "A"), ("max_power_kw", "kW")):
            mine, theirs = getattr(child, field), getattr(parent, field)
            if mine is not None and theirs is not None and mine > theirs:
                found.append(f"{child.name} ({mine:g} {unit}) is larger than its parent {parent.name} "
                             f"({theirs:g} {unit}): the parent's limit is what counts.")
    return found


@admin.register(Zone)
class ZoneAdmin(admin.ModelAdmin):
    list_display = ["name", "parent", "mode", "max_current_a", "max_power_kw", "fallback_current_a",
                    "add_pv_production", "measured_at"]
    list_filter = ["mode", "add_pv_production"]
    search_fields = ["name"]
    inlines = [TimeOfUseInline]
    fieldsets = [
        (None, {"fields": ["name", "parent", "mode", "max_current_a", "max_power_kw", "fallback_current_a",
                           "add_pv_production", "pv_phases"]}),
        ("Latest measurement (meters, BEMS or entered here)", {
            "fields": ["measured_current_l1_a", "measured_current_l2_a", "measured_current_l3_a",
                       "measured_power_kw", "measured_at", "pv_power_kw", "pv_current_l1_a", "pv_current_l2_a",
                       "pv_current_l3_a", "pv_measured_at"],
        }),
    ]

    def save_model(self, request: HttpRequest, obj: Zone, form: forms.ModelForm[Zone], change: bool) -> None:
        super().save_model(request, obj, form, change)
        for warning in larger_than_parent(obj):
            messages.warning(request, warning)


_STATE_FIELDS = ("connector_id", "purpose", "transaction_id", "in_force_a", "pending_a", "wanted_a", "binding",
                 "waiting", "last_status", "last_answer_at")


class LimitStateInline(admin.TabularInline):
    """On the charger's page: per connector, the limit in force, the one awaiting an answer, the one
    wanted and why they differ."""

    model = LimitState
    extra = 0
    can_delete = False
    fields = readonly_fields = _STATE_FIELDS

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(LimitState)
class LimitStateAdmin(admin.ModelAdmin):
    list_display = ["charger", "connector_id", "purpose", "transaction_id", "in_force_a", "pending_a", "wanted_a",
                    "binding", "waiting", "last_status", "updated_at"]
    list_filter = ["purpose", "last_status"]
    search_fields = ["charger__charge_point_id"]
    readonly_fields = [f.name for f in LimitState._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Setpoint)
class SetpointAdmin(admin.ModelAdmin):
    list_display = ["timestamp", "charger", "connector_id", "transaction_id", "limit_a", "paused", "binding",
                    "overdraw", "sent", "status"]
    list_filter = ["paused", "sent", "overdraw", "status"]
    search_fields = ["charger__charge_point_id", "binding", "=transaction_id"]
    date_hierarchy = "timestamp"
    readonly_fields = [f.name for f in Setpoint._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the history of decisions is evidence: only the retention task prunes it
