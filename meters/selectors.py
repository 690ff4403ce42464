"""Reads of the meters app: what the control loop and the exports need."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

from django.db.models import QuerySet

from evce import clock
from loadmgmt.models import SiteSettings
from meters import registers
from meters.models import PHASE_CURRENTS, Meter, MeterReading, MeterRole

Phases = tuple[float, float, float]

CSV_HEADER = ("meter", "role", "zone", "minute_start_utc", "samples", *registers.QUANTITIES)


def ev_submeter_currents(
    zone_ids: Iterable[int], *, now: dt.datetime | None = None, max_age_s: float | None = None
) -> dict[int, Phases]:
    """EV load measured by EV sub-meters, per zone: the per-phase sum of their latest currents (A).

    A zone is in the answer when it has at least one enabled EV sub-meter. A sub-meter whose
    reading is older than ``max_age_s`` (default: ``SiteSettings.measurement_max_age_s``) counts
    0 A, and so does a phase its map does not measure: in "limit − (total − EV load)",
    under-counting EV load is the conservative direction (it lowers the capacity).
    """
    now = clock.now() if now is None else now
    if max_age_s is None:
        max_age_s = SiteSettings.load().measurement_max_age_s
    since = now - dt.timedelta(seconds=max_age_s)
    rows = Meter.objects.filter(role=MeterRole.EV_SUBMETER, enabled=True, zone_id__in=list(zone_ids)).values_list(
        "zone_id", "last_reading_at", "last_values"
    )
    sums: dict[int, list[float]] = {}
    for zone_id, reading_at, values in rows:
        phases = sums.setdefault(zone_id, [0.0, 0.0, 0.0])
        if reading_at is None or not since <= reading_at <= now:
            continue
        for index, quantity in enumerate(PHASE_CURRENTS):
            value = (values or {}).get(quantity)
            if isinstance(value, (int, float)) and value > 0:
                phases[index] += value
    return {zone_id: (p[0], p[1], p[2]) for zone_id, p in sums.items()}


def ev_submeter_readings(
    zone_ids: Iterable[int], *, now: dt.datetime, max_age_s: float
) -> dict[int, tuple[float, Phases]]:
    """Per zone whose EV sub-meters are all fresh: (time of the oldest reading, per-phase sum).

    The control loop combines this with the zone meter's reading only when both were taken in
    the same window, so it needs the time; a zone with a stale sub-meter is left out (the loop
    then uses the chargers' own readings instead).
    """
    since = now - dt.timedelta(seconds=max_age_s)
    rows = Meter.objects.filter(role=MeterRole.EV_SUBMETER, enabled=True, zone_id__in=list(zone_ids)).values_list(
        "zone_id", "last_reading_at", "last_values"
    )
    sums: dict[int, list[float]] = {}
    oldest: dict[int, float] = {}
    stale: set[int] = set()
    for zone_id, reading_at, values in rows:
        if reading_at is None or not since <= reading_at <= now:
            stale.add(zone_id)
            continue
        phases = sums.setdefault(zone_id, [0.0, 0.0, 0.0])
        oldest[zone_id] = min(oldest.get(zone_id, reading_at.timestamp()), reading_at.timestamp())
        for index, quantity in enumerate(PHASE_CURRENTS):
            value = (values or {}).get(quantity)
            if isinstance(value, (int, float)) and value > 0:
                phases[index] += value
    return {zone_id: (oldest[zone_id], (p[0], p[1], p[2])) for zone_id, p in sums.items() if zone_id not in stale}


def history_csv_rows(readings: QuerySet[MeterReading]) -> Iterator[tuple[object, ...]]:
    """The CSV export of 1-minute history, header first; streams (large histories fit)."""
    yield CSV_HEADER
    rows = readings.select_related("meter", "meter__zone").order_by("meter__name", "start")
    for reading in rows.iterator(chunk_size=2000):
        meter = reading.meter
        yield (
            _csv_text(meter.name),
            meter.role,
            _csv_text(meter.zone.name) if meter.zone else "",
            reading.start.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            reading.samples,
            *(_csv_number(getattr(reading, q)) for q in registers.QUANTITIES),
        )


def _csv_number(value: float | None) -> str:
    """Full precision for counters (Wh), 4 decimals for averages; empty when not measured."""
    return "" if value is None else str(round(value, 4))


def _csv_text(text: str) -> str:
    """Names typed by operators must not become formulas in a spreadsheet."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
