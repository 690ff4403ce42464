from __future__ import annotations

import csv
import datetime as dt

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils.html import format_html_join

from evce import clock
from meters import modbus, registers, selectors, services
from meters.models import Meter, MeterReading

#: Selected meters read at once by "Test connection" (concurrently, each within its timeout).
MAX_TEST_CONNECTION = 20
CONFIG_FIELDS = [f.name for f in Meter._meta.concrete_fields if f.editable and not f.primary_key]


def format_values(values: dict[str, float]) -> str:
    """``current_l1_a 31.5 A, …`` in register-table order."""
    ordered = [q for q in registers.QUANTITIES if q in values]
    return ", ".join(f"{q} {round(values[q], 2):.12g} {registers.QUANTITY_UNITS[q]}" for q in ordered)


class _Echo:
    """A file-like object whose write returns the line: lets csv.writer feed a streaming response."""

    def write(self, value: str) -> str:
        return value


def history_csv_response(readings: QuerySet[MeterReading], name: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    lines = (writer.writerow(row) for row in selectors.history_csv_rows(readings))
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    stamp = clock.now().astimezone(dt.UTC).strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    return response


@admin.register(Meter)
class MeterAdmin(admin.ModelAdmin):
    list_display = ["name", "meter_type", "transport", "address", "role", "zone", "enabled", "last_reading_at",
                    "short_last_error", "consecutive_failures", "stale"]
    list_filter = ["role", "meter_type", "transport", "enabled", "stale", "zone"]
    search_fields = ["name", "host", "serial_device", "zone__name"]
    list_select_related = ["zone"]
    actions = ["test_connection", "export_history_csv"]
    # A tuple: it is also a fieldset's "fields", whose (invariant) list type is wider than readonly_fields'.
    readonly_fields = ("last_poll_at", "last_reading_at", "latest_values", "last_error", "last_error_at",
                       "consecutive_failures", "stale")
    fieldsets = [
        (None, {"fields": ["name", "enabled", "role", "zone"]}),
        ("Device", {"fields": ["meter_type", "register_spec", "word_order"]}),
        ("Connection", {"fields": ["transport", "host", "port", "serial_device", "baudrate", "parity", "stopbits",
                                   "unit_id", "timeout_s"]}),
        ("Polling and history", {"fields": ["poll_period_s", "history_retention_days"]}),
        ("Status (written by the poller)", {"fields": readonly_fields}),
    ]

    @admin.display(description="last error")
    def short_last_error(self, obj: Meter) -> str:
        return obj.last_error if len(obj.last_error) <= 80 else obj.last_error[:79] + "…"

    @admin.display(description="latest values")
    def latest_values(self, obj: Meter) -> str:
        ordered = [q for q in registers.QUANTITIES if q in obj.last_values]
        return format_html_join(
            "", "<div>{} = {} {}</div>", ((q, obj.last_values[q], registers.QUANTITY_UNITS[q]) for q in ordered)
        ) or "-"

    def save_model(self, request: HttpRequest, obj: Meter, form: object, change: bool) -> None:
        """Save the configuration only: the poller's status columns are never rolled back by an edit."""
        if not change:
            obj.save()
            return
        previous = Meter.objects.get(pk=obj.pk)
        if (previous.role, previous.zone_id) != (obj.role, obj.zone_id) or (previous.enabled and not obj.enabled):
            services.meter_release_zone(meter=previous)
        obj.save(update_fields=CONFIG_FIELDS)

    def delete_model(self, request: HttpRequest, obj: Meter) -> None:
        services.meter_release_zone(meter=obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Meter]) -> None:
        for meter in queryset:
            services.meter_release_zone(meter=meter)
        super().delete_queryset(request, queryset)

    @admin.action(description="Test connection (read once and show the values)", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Meter]) -> None:
        meters = list(queryset[: MAX_TEST_CONNECTION + 1])
        if len(meters) > MAX_TEST_CONNECTION:
            self.message_user(request, f"Select at most {MAX_TEST_CONNECTION} meters to test.", messages.ERROR)
            return
        results = services.meters_read_once(meters=meters)
        for meter in meters:
            result = results[meter.pk]
            if isinstance(result, modbus.MeterReading):
                self.message_user(request, f"{meter}: OK - {format_values(result.values)}", messages.SUCCESS)
                for problem in result.errors:
                    self.message_user(request, f"{meter}: {problem.quantity} not read: {problem.reason}",
                                      messages.WARNING)
            else:
                self.message_user(request, f"{meter}: FAILED - {result}", messages.ERROR)

    @admin.action(description="Export 1-minute history (CSV)", permissions=["view"])
    def export_history_csv(self, request: HttpRequest, queryset: QuerySet[Meter]) -> StreamingHttpResponse:
        return history_csv_response(MeterReading.objects.filter(meter__in=queryset), "meter-history")


@admin.register(MeterReading)
class MeterReadingAdmin(admin.ModelAdmin):
    list_display = ["start", "meter", "samples", "power_w", "current_l1_a", "current_l2_a", "current_l3_a",
                    "voltage_l1_v", "energy_import_wh"]
    list_filter = ["meter__role", "meter__zone", "meter", "start"]
    search_fields = ["meter__name"]
    date_hierarchy = "start"
    list_select_related = ["meter"]
    actions = ["export_csv"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Export selected rows (CSV)", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[MeterReading]) -> StreamingHttpResponse:
        return history_csv_response(queryset, "meter-history")
