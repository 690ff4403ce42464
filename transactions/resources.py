"""CSV exports of sessions, meter values, site aggregates and per-badge statements
(django-import-export resources; export only: sessions are written by chargers, not files)."""

from __future__ import annotations

from typing import Any

import tablib
from django.utils import timezone
from import_export import fields, resources, widgets

from transactions.models import MeterSample, Transaction
from transactions.selectors import Statement


class LocalTimeWidget(widgets.Widget):
    def render(self, value: Any, obj: Any = None, **kwargs: Any) -> str:
        return "" if value is None else timezone.localtime(value).isoformat()


def _kilo(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value / 1000:.{digits}f}"


def _minutes(obj: Transaction) -> str:
    return "" if obj.duration is None else f"{obj.duration.total_seconds() / 60:.1f}"


class TransactionResource(resources.ModelResource):
    transaction = fields.Field("id", "transaction")
    charger = fields.Field("charger__charge_point_id", "charger")
    holder = fields.Field("badge__holder", "holder")
    group = fields.Field("badge__group__name", "group")
    start_time = fields.Field("start_time", "start_time", LocalTimeWidget())
    stop_time = fields.Field("stop_time", "stop_time", LocalTimeWidget())
    duration_min = fields.Field(column_name="duration_min", dehydrate_method="dehydrate_duration_min")
    energy_kwh = fields.Field(column_name="energy_kwh", dehydrate_method="dehydrate_energy_kwh")
    average_power_kw = fields.Field(column_name="average_power_kw", dehydrate_method="dehydrate_average_power_kw")
    peak_power_kw = fields.Field(column_name="peak_power_kw", dehydrate_method="dehydrate_peak_power_kw")

    class Meta:
        model = Transaction
        fields = [
            "transaction", "charger", "connector_id", "id_tag", "holder", "group", "start_time", "stop_time",
            "duration_min", "energy_kwh", "average_power_kw", "peak_power_kw", "meter_start_wh", "meter_stop_wh",
            "stop_reason", "state", "closed_by", "offline", "id_tag_status", "auth_status_at_start",
        ]
        export_order = fields

    def get_queryset(self) -> Any:
        return Transaction.objects.select_related("charger", "badge", "badge__group")

    def dehydrate_duration_min(self, obj: Transaction) -> str:
        return _minutes(obj)

    def dehydrate_energy_kwh(self, obj: Transaction) -> str:
        return _kilo(obj.energy_wh)

    def dehydrate_average_power_kw(self, obj: Transaction) -> str:
        return _kilo(obj.average_power_w, 2)

    def dehydrate_peak_power_kw(self, obj: Transaction) -> str:
        return _kilo(obj.peak_power_w, 2)


class MeterSampleResource(resources.ModelResource):
    timestamp = fields.Field("timestamp", "timestamp", LocalTimeWidget())
    charger = fields.Field("charger__charge_point_id", "charger")
    transaction = fields.Field("transaction_id", "transaction")

    class Meta:
        model = MeterSample
        fields = ["timestamp", "transaction", "charger", "connector_id", "measurand", "phase", "location", "context",
                  "value", "unit", "raw_value"]
        export_order = fields


class _AggregateResource(resources.Resource):
    """Rows of `transactions.selectors.site_aggregate` (dicts)."""

    sessions = fields.Field("sessions", "sessions")
    energy_kwh = fields.Field("energy_kwh", "energy_kwh")
    duration_h = fields.Field("duration_h", "duration_h")


class DailyEnergyResource(_AggregateResource):
    day = fields.Field("day", "day")

    class Meta:
        export_order = ["day", "sessions", "energy_kwh", "duration_h"]


class MonthlyEnergyResource(_AggregateResource):
    month = fields.Field("month", "month")

    class Meta:
        export_order = ["month", "sessions", "energy_kwh", "duration_h"]


class BadgeEnergyResource(_AggregateResource):
    id_tag = fields.Field("id_tag", "id_tag")
    holder = fields.Field("holder", "holder")
    group = fields.Field("group", "group")

    class Meta:
        export_order = ["id_tag", "holder", "group", "sessions", "energy_kwh", "duration_h"]


class ChargerEnergyResource(_AggregateResource):
    charger = fields.Field("charger", "charger")

    class Meta:
        export_order = ["charger", "sessions", "energy_kwh", "duration_h"]


AGGREGATE_RESOURCES: dict[str, type[resources.Resource]] = {
    "day": DailyEnergyResource,
    "month": MonthlyEnergyResource,
    "badge": BadgeEnergyResource,
    "charger": ChargerEnergyResource,
}


def aggregate_dataset(kind: str, rows: list[dict[str, Any]]) -> tablib.Dataset:
    return AGGREGATE_RESOURCES[kind]().export(rows)


class StatementSessionResource(resources.ModelResource):
    transaction = fields.Field("id", "transaction")
    charger = fields.Field("charger__charge_point_id", "charger")
    start_time = fields.Field("start_time", "start_time", LocalTimeWidget())
    stop_time = fields.Field("stop_time", "stop_time", LocalTimeWidget())
    duration_min = fields.Field(column_name="duration_min", dehydrate_method="dehydrate_duration_min")
    energy_kwh = fields.Field(column_name="energy_kwh", dehydrate_method="dehydrate_energy_kwh")

    class Meta:
        model = Transaction
        fields = ["transaction", "charger", "connector_id", "start_time", "stop_time", "duration_min", "energy_kwh",
                  "stop_reason"]
        export_order = fields

    def dehydrate_duration_min(self, obj: Transaction) -> str:
        return _minutes(obj)

    def dehydrate_energy_kwh(self, obj: Transaction) -> str:
        return _kilo(obj.energy_wh)


def statement_dataset(statement: Statement) -> tablib.Dataset:
    """One row per session, then a TOTAL row (sessions, duration, kWh) for the period."""
    data = StatementSessionResource().export(statement.sessions)
    badge = statement.badge
    data.insert_col(0, [badge.id_tag] * len(data), header="id_tag")
    data.insert_col(1, [badge.holder] * len(data), header="holder")
    data.append([
        badge.id_tag, badge.holder, "TOTAL", f"{len(statement.sessions)} sessions", "",
        f"{timezone.localtime(statement.period.start).isoformat()}",
        f"{timezone.localtime(statement.period.end).isoformat()}",
        f"{statement.duration.total_seconds() / 60:.1f}", _kilo(statement.energy_wh), "",
    ])
    return data
