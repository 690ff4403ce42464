"""Reads about charging sessions: history filters, site aggregates, per-badge statements.

A session counts in the period (and the day, the month) in which it started, in the site's
time zone (TIME_ZONE); its energy is the session's energy (see transactions.energy). Sessions
whose start is unknown (a StopTransaction for a transaction never seen) are left out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncMonth
from django.utils import timezone

from badges.models import Badge
from transactions.models import MeterSample, Transaction

AGGREGATE_KINDS = ("day", "month", "badge", "charger")


@dataclass(frozen=True)
class Period:
    """[start, end): from the start of `first_day` to the end of `last_day`, site time zone."""

    start: dt.datetime
    end: dt.datetime

    @classmethod
    def of_days(cls, first_day: dt.date, last_day: dt.date) -> Period:
        if last_day < first_day:
            raise ValueError(f"the period ends ({last_day}) before it starts ({first_day})")
        start = timezone.make_aware(dt.datetime.combine(first_day, dt.time.min))
        end = timezone.make_aware(dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time.min))
        return cls(start, end)

    def label(self) -> str:
        last = timezone.localtime(self.end) - dt.timedelta(days=1)
        return f"{timezone.localtime(self.start):%Y-%m-%d} to {last:%Y-%m-%d}"


def transactions_history(
    *,
    period: Period | None = None,
    charger_pk: int | None = None,
    badge_pk: int | None = None,
    group_pk: int | None = None,
    holder: str | None = None,
) -> QuerySet[Transaction]:
    """Sessions that started in `period` (all when None), optionally of one charger, badge, group, holder."""
    sessions = Transaction.objects.filter(start_time__isnull=False).select_related("charger", "badge", "badge__group")
    if period is not None:
        sessions = sessions.filter(start_time__gte=period.start, start_time__lt=period.end)
    if charger_pk is not None:
        sessions = sessions.filter(charger_id=charger_pk)
    if badge_pk is not None:
        sessions = sessions.filter(badge_id=badge_pk)
    if group_pk is not None:
        sessions = sessions.filter(badge__group_id=group_pk)
    if holder:
        sessions = sessions.filter(badge__holder__icontains=holder)
    return sessions


_DURATION = ExpressionWrapper(F("stop_time") - F("start_time"), output_field=DurationField())


def _totals(sessions: QuerySet[Transaction], *keys: str) -> QuerySet[Any]:
    return (
        sessions.order_by().values(*keys)
        .annotate(sessions=Count("pk"), energy_wh=Sum("energy_wh"), duration=Sum(_DURATION))
        .order_by(*keys)
    )


def _row(values: dict[str, Any], **labels: Any) -> dict[str, Any]:
    duration = values.get("duration") or dt.timedelta(0)
    return {
        **labels,
        "sessions": values["sessions"],
        "energy_kwh": round((values["energy_wh"] or 0) / 1000, 3),
        "duration_h": round(duration.total_seconds() / 3600, 2),
    }


def energy_by_day(sessions: QuerySet[Transaction]) -> list[dict[str, Any]]:
    rows = _totals(sessions.annotate(day=TruncDay("start_time", tzinfo=timezone.get_current_timezone())), "day")
    return [_row(values, day=timezone.localtime(values["day"]).date().isoformat()) for values in rows]


def energy_by_month(sessions: QuerySet[Transaction]) -> list[dict[str, Any]]:
    rows = _totals(sessions.annotate(month=TruncMonth("start_time", tzinfo=timezone.get_current_timezone())),
                   "month")
    return [_row(values, month=f"{timezone.localtime(values['month']):%Y-%m}") for values in rows]


def energy_by_badge(sessions: QuerySet[Transaction]) -> list[dict[str, Any]]:
    """Per badge; sessions of unknown tags are grouped under the tag the charger sent."""
    rows = _totals(sessions, "badge__id_tag", "badge__holder", "badge__group__name", "id_tag")
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for values in rows:
        key = (values["badge__id_tag"] or values["id_tag"], values["badge__holder"] or "",
               values["badge__group__name"] or "")
        total = merged.setdefault(key, {"sessions": 0, "energy_wh": 0, "duration": dt.timedelta(0)})
        total["sessions"] += values["sessions"]
        total["energy_wh"] += values["energy_wh"] or 0
        total["duration"] += values["duration"] or dt.timedelta(0)
    return [
        _row(total, id_tag=tag, holder=holder, group=group) for (tag, holder, group), total in sorted(merged.items())
    ]


def energy_by_charger(sessions: QuerySet[Transaction]) -> list[dict[str, Any]]:
    rows = _totals(sessions, "charger__charge_point_id")
    return [_row(values, charger=values["charger__charge_point_id"]) for values in rows]


def site_aggregate(kind: str, sessions: QuerySet[Transaction]) -> list[dict[str, Any]]:
    if kind not in AGGREGATE_KINDS:
        raise ValueError(f"unknown aggregate {kind!r}; use one of: {', '.join(AGGREGATE_KINDS)}")
    return {"day": energy_by_day, "month": energy_by_month, "badge": energy_by_badge,
            "charger": energy_by_charger}[kind](sessions)


@dataclass(frozen=True)
class Statement:
    badge: Badge
    period: Period
    sessions: list[Transaction]

    @property
    def energy_wh(self) -> int:
        return sum(session.energy_wh or 0 for session in self.sessions)

    @property
    def duration(self) -> dt.timedelta:
        return sum((session.duration or dt.timedelta(0) for session in self.sessions), dt.timedelta(0))


def badge_statement(*, badge: Badge, period: Period) -> Statement:
    """The badge's sessions started in the period (oldest first), with totals."""
    sessions = transactions_history(period=period, badge_pk=badge.pk).order_by("start_time", "pk")
    return Statement(badge=badge, period=period, sessions=list(sessions))


def transaction_meter_samples(transaction_pk: int) -> QuerySet[MeterSample]:
    return MeterSample.objects.filter(transaction_id=transaction_pk).select_related("charger").order_by(
        "timestamp", "pk"
    )
