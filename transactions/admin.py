"""Charging sessions in the admin: history filters, CSV exports, site aggregates, meter values."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from import_export.admin import ExportMixin
from import_export.formats.base_formats import CSV

from evce import clock
from transactions.models import MeterSample, Transaction
from transactions.resources import MeterSampleResource, TransactionResource, aggregate_dataset
from transactions.selectors import (
    AGGREGATE_KINDS,
    Period,
    site_aggregate,
    transaction_meter_samples,
    transactions_history,
)


def csv_response(text: str, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class PeriodFilter(admin.SimpleListFilter):
    """Quick periods (site time zone); any other period with the date hierarchy or the report page."""

    title = "period"
    parameter_name = "period"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("today", "Today"), ("7d", "Last 7 days"), ("month", "This month"), ("last_month", "Last month"),
                ("year", "This year")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Transaction]) -> QuerySet[Transaction]:
        period = self.period(self.value())
        if period is None:
            return queryset
        return queryset.filter(start_time__gte=period.start, start_time__lt=period.end)

    @staticmethod
    def period(value: str | None) -> Period | None:
        today = timezone.localdate(clock.now())
        first_of_month = today.replace(day=1)
        end_of_last_month = first_of_month - dt.timedelta(days=1)
        days = {
            "today": (today, today),
            "7d": (today - dt.timedelta(days=6), today),
            "month": (first_of_month, today),
            "last_month": (end_of_last_month.replace(day=1), end_of_last_month),
            "year": (today.replace(month=1, day=1), today),
        }.get(value or "")
        return Period.of_days(*days) if days else None


SAMPLE_FIELDS = ("timestamp", "measurand", "phase", "value", "unit", "context")


class MeterSampleInline(admin.TabularInline):
    model = MeterSample
    extra = 0
    can_delete = False
    fields = SAMPLE_FIELDS
    readonly_fields = SAMPLE_FIELDS
    max_num = 0


class ReportForm(forms.Form):
    kind = forms.ChoiceField(choices=[(kind, f"per {kind}") for kind in AGGREGATE_KINDS], label="Aggregate")
    first_day = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    last_day = forms.DateField(label="To (included)", widget=forms.DateInput(attrs={"type": "date"}))


@admin.register(Transaction)
class TransactionAdmin(ExportMixin, admin.ModelAdmin):
    resource_classes = [TransactionResource]
    export_formats = [CSV]
    list_display = [
        "id", "charger", "connector_id", "id_tag", "holder", "id_tag_status", "state", "start_time", "stop_time",
        "energy_kwh", "duration_display", "stop_reason", "closed_by", "offline",
    ]
    list_filter = [PeriodFilter, "state", "closed_by", "offline", "charger", "badge__group", "stop_reason"]
    search_fields = ["id_tag", "badge__holder", "badge__email", "badge__reference", "charger__charge_point_id", "=id"]
    list_select_related = ["charger", "badge", "badge__group"]
    date_hierarchy = "start_time"
    readonly_fields = [f.name for f in Transaction._meta.fields] + ["average_power", "meter_values_link"]
    inlines = [MeterSampleInline]
    import_export_change_list_template = "admin/transactions/transaction/change_list_with_report.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # written by chargers only

    def has_export_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    @admin.display(description="holder", ordering="badge__holder")
    def holder(self, obj: Transaction) -> str:
        return obj.badge.holder if obj.badge else ""

    @admin.display(description="energy (kWh)", ordering="energy_wh")
    def energy_kwh(self, obj: Transaction) -> str:
        return "" if obj.energy_wh is None else f"{obj.energy_wh / 1000:.3f}"

    @admin.display(description="duration")
    def duration_display(self, obj: Transaction) -> str:
        if obj.duration is None:
            return ""
        minutes = int(obj.duration.total_seconds() // 60)
        return f"{minutes // 60} h {minutes % 60:02d}"

    @admin.display(description="average power")
    def average_power(self, obj: Transaction) -> str:
        return "" if obj.average_power_w is None else f"{obj.average_power_w / 1000:.2f} kW"

    @admin.display(description="meter values")
    def meter_values_link(self, obj: Transaction) -> str:
        url = reverse("admin:transactions_transaction_meter_values", args=[obj.pk])
        return format_html('<a href="{}">Download the meter values (CSV)</a>', url)

    def get_urls(self) -> list[Any]:
        extra = [
            path("<path:object_id>/meter-values.csv", self.admin_site.admin_view(self.meter_values_view),
                 name="transactions_transaction_meter_values"),
            path("report/", self.admin_site.admin_view(self.report_view), name="transactions_transaction_report"),
        ]
        return [*extra, *super().get_urls()]

    def meter_values_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not request.user.has_perm("transactions.view_metersample"):
            raise PermissionDenied
        record = get_object_or_404(Transaction, pk=object_id)
        data = MeterSampleResource().export(transaction_meter_samples(record.pk))
        return csv_response(data.export("csv"), f"transaction-{record.pk}-meter-values.csv")

    def report_view(self, request: HttpRequest) -> HttpResponse:
        """Site aggregates (kWh per day, month, badge, charger) for a period, as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        today = timezone.localdate(clock.now())
        form = ReportForm(request.GET or None, initial={"kind": "day", "first_day": today.replace(day=1),
                                                       "last_day": today})
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            period = Period.of_days(data["first_day"], data["last_day"])
            rows = site_aggregate(data["kind"], transactions_history(period=period))
            name = f"energy-per-{data['kind']}-{data['first_day']}-{data['last_day']}.csv"
            return csv_response(aggregate_dataset(data["kind"], rows).export("csv"), name)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "form": form,
                   "title": "Energy report"}
        return TemplateResponse(request, "admin/transactions/transaction/report.html", context)


@admin.register(MeterSample)
class MeterSampleAdmin(admin.ModelAdmin):
    list_display = ["timestamp", "charger", "connector_id", "transaction", "measurand", "phase", "value", "unit"]
    list_filter = ["measurand", "phase", "context"]
    search_fields = ["charger__charge_point_id", "=transaction__id"]
    readonly_fields = [f.name for f in MeterSample._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
