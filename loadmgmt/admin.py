from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

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


class TimeOfUseInline(admin.TabularInline):
    model = TimeOfUseRule
    extra = 0


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
