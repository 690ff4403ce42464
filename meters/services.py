"""Writes of the meters app: poll results, staleness, history; and the one-off read of the admin.

The poll (``meters_poll_due``) in numbered steps:
1. pick the enabled meters whose poll period has elapsed; stamp ``last_poll_at``;
2. read them all concurrently with :func:`meters.modbus.poll_meters` (asyncio inside, each meter
   bounded by its own timeout), every reading stamped with the poll's start time (conservative);
3. in one transaction, one savepoint per meter (a fault in one never loses the others): record
   the reading - latest values, history minute, the zone's measurement - or the failure;
4. mark meters whose last reading is older than ``SiteSettings.measurement_max_age_s`` stale,
   each transition logged once.
Callers must not run two polls at once (the Celery task holds a Redis lock).

A value that is not a finite number never gets past :func:`meters.modbus.read_meter`; it is
checked again here, and a reading lacking a quantity its role needs is a failed reading: the zone
measurement is then not refreshed, ages, and the zone falls back to its fixed limit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from django.db import transaction
from django.db.models import F, Q

from evce import clock
from loadmgmt.models import SiteSettings, Zone
from loadmgmt.services import zone_record_measurement
from meters import modbus, registers
from meters.models import COUNTERS, PHASE_CURRENTS, Meter, MeterReading, MeterRole

logger = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 1000
MINUTE = dt.timedelta(minutes=1)


@dataclass
class PollReport:
    polled: int = 0
    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    turned_stale: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# --------------------------------------------------------------------------- #
# Polling                                                                      #
# --------------------------------------------------------------------------- #
def meters_poll_due(*, now: dt.datetime) -> PollReport:
    """Poll every due meter once, record what came back, update staleness (steps in the module doc)."""
    report = PollReport()
    due = [meter for meter in Meter.objects.filter(enabled=True).select_related("zone") if meter.is_due(now)]
    Meter.objects.filter(pk__in=[meter.pk for meter in due]).update(last_poll_at=now)
    configs: dict[int, modbus.MeterConfig] = {}
    results: dict[int, modbus.MeterReading | modbus.MeterError] = {}
    for meter in due:
        try:
            configs[meter.pk] = meter.to_config()
        except (KeyError, ValueError) as exc:
            results[meter.pk] = modbus.MeterError(f"configuration: {exc}")
    if configs:
        results.update(asyncio.run(modbus.poll_meters(configs, now=now.timestamp())))
    report.polled = len(due)
    with transaction.atomic():
        # Consumption first: a PV reading is stored under the zone's consumption timestamp.
        for meter in sorted(due, key=lambda meter: meter.role != MeterRole.ZONE_TOTAL):
            _record_one(meter, results[meter.pk], now, report)
    report.turned_stale = meters_mark_stale(now=now, max_age_s=SiteSettings.load().measurement_max_age_s)
    return report


def _record_one(meter: Meter, result: modbus.MeterReading | modbus.MeterError, at: dt.datetime,
                report: PollReport) -> None:
    """Record one meter's result in its own savepoint: a bug here costs this meter only."""
    try:
        with transaction.atomic():
            if isinstance(result, modbus.MeterReading):
                error = meter_record_reading(meter=meter, values=result.values, errors=result.errors, at=at)
            else:
                error = str(result)
                meter_record_failure(meter=meter, error=error, at=at)
    except Exception as exc:  # isolate the fault (even a bug) to this meter
        logger.exception("meter %s: recording the poll result failed", meter)
        error = f"internal error while recording: {type(exc).__name__}: {exc}"
        try:
            with transaction.atomic():
                meter_record_failure(meter=meter, error=error, at=at)
        except Exception:  # the database itself is failing: the log above is all we can do
            logger.exception("meter %s: recording the failure failed too", meter)
    if error:
        report.failed[meter.name] = error
    else:
        report.ok.append(meter.name)


def poll_time_bound_s() -> float:
    """Upper bound of one poll's duration: meters sharing an endpoint may wait for each other."""
    per_endpoint: dict[tuple[str, ...], float] = defaultdict(float)
    for meter in Meter.objects.filter(enabled=True).only("transport", "host", "port", "serial_device", "timeout_s"):
        key = ("serial", meter.serial_device) if meter.transport == "rtu_serial" else (meter.host, str(meter.port))
        per_endpoint[key] += meter.timeout_s
    return max(per_endpoint.values(), default=0.0) + 30.0


# --------------------------------------------------------------------------- #
# Recording one meter                                                          #
# --------------------------------------------------------------------------- #
def meter_record_reading(
    *,
    meter: Meter,
    values: Mapping[str, float],
    at: dt.datetime,
    errors: Iterable[modbus.QuantityError] = (),
) -> str:
    """Store a reading: latest values, history minute, and the zone measurement of the meter's role.

    Returns "" when the reading was used, else why not (then recorded as a failure). Non-finite
    values are dropped; a reading without a quantity the role needs is refused as a whole.
    """
    clean = {q: float(v) for q, v in values.items() if q in registers.QUANTITY_UNITS and _finite(v)}
    missing = [q for q in meter.required_quantities() if q not in clean]
    if missing:
        reasons = {e.quantity: e.reason for e in errors}
        details = "; ".join(f"{q}: {reasons.get(q, 'not a valid number')}" for q in missing)
        error = f"reading not used, missing {', '.join(missing)} ({details})"
        meter_record_failure(meter=meter, error=error, at=at)
        return error
    with transaction.atomic():
        current = Meter.objects.select_for_update().get(pk=meter.pk)
        if current.last_reading_at is not None and at <= current.last_reading_at:
            return ""  # an older reading never replaces a newer one
        history = _accumulate(current, clean, at)
        Meter.objects.filter(pk=meter.pk).update(
            last_reading_at=at, last_values=clean, consecutive_failures=0, stale=False, **history
        )
        _feed_zone(current, clean, at)
    if current.stale and current.last_reading_at is not None:
        logger.info("meter %s: reading again, no longer stale", meter)
    elif current.consecutive_failures:
        logger.info("meter %s: reading again after %d failure(s)", meter, current.consecutive_failures)
    return ""


def meter_record_failure(*, meter: Meter, error: str, at: dt.datetime) -> None:
    """Count a failed poll; logged when a meter starts failing or fails differently."""
    Meter.objects.filter(pk=meter.pk).update(
        last_error=error[:MAX_ERROR_LENGTH], last_error_at=at, consecutive_failures=F("consecutive_failures") + 1
    )
    if meter.consecutive_failures == 0 or error[:MAX_ERROR_LENGTH] != meter.last_error:
        logger.warning("meter %s: %s", meter, error)
    else:
        logger.debug("meter %s: failure %d: %s", meter, meter.consecutive_failures + 1, error)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- #
# Feeding the zones                                                            #
# --------------------------------------------------------------------------- #
def _feed_zone(meter: Meter, values: Mapping[str, float], at: dt.datetime) -> None:
    """Hand the reading to load management according to the meter's role."""
    if meter.zone is None:
        return
    if meter.role == MeterRole.ZONE_TOTAL:
        has_currents = all(q in values for q in PHASE_CURRENTS)
        power_w = values.get(registers.POWER_W)
        zone_record_measurement(
            zone=meter.zone,
            at=at,
            current_a=tuple(values[q] for q in PHASE_CURRENTS) if has_currents else None,  # type: ignore[arg-type]
            power_kw=None if power_w is None else power_w / 1000,
        )
    elif meter.role == MeterRole.PV:
        # Production only: a PV meter's standby draw or reversed CTs never lower the capacity below 0 PV.
        pv_kw = max(0.0, values[registers.POWER_W] / 1000)
        has_currents = all(q in values for q in PHASE_CURRENTS)
        pv_currents = tuple(max(0.0, abs(values[q])) for q in PHASE_CURRENTS) if has_currents else None
        zone_record_measurement(zone=meter.zone, at=at, pv_power_kw=pv_kw,
                                pv_current_a=pv_currents)  # type: ignore[arg-type]
    # EV sub-meters: their latest values on the meter row are what `ev_submeter_currents` reads.


def meters_mark_stale(*, now: dt.datetime, max_age_s: float) -> list[str]:
    """Flag meters whose latest reading is too old; each transition is logged once.

    A PV meter going stale sets its zone's PV production to 0 (without refreshing the zone):
    production that nobody measures any more must not keep adding capacity.
    """
    cutoff = now - dt.timedelta(seconds=max_age_s)
    too_old = Q(last_reading_at__isnull=True) | Q(last_reading_at__lt=cutoff)
    candidates = Meter.objects.filter(too_old, stale=False)
    turned: list[str] = []
    for meter in candidates.select_related("zone"):
        if Meter.objects.filter(pk=meter.pk, stale=False).update(stale=True) != 1:
            continue  # another process got there first
        turned.append(meter.name)
        logger.warning(
            "meter %s is stale: last reading %s is older than %g s%s", meter, meter.last_reading_at, max_age_s,
            f"; zone {meter.zone} no longer gets its measurement" if meter.zone and meter.role != "monitor" else "",
        )
        if meter.role == MeterRole.PV and meter.zone is not None:
            zone_record_measurement(zone=meter.zone, at=now, pv_power_kw=0.0)
    return turned


def meter_release_zone(*, meter: Meter) -> None:
    """The meter stops feeding its zone (role/zone changed, deleted): clear the PV it contributed."""
    if meter.role == MeterRole.PV and meter.zone_id is not None:
        zone = Zone.objects.get(pk=meter.zone_id)
        zone_record_measurement(zone=zone, at=clock.now(), pv_power_kw=0.0)


# --------------------------------------------------------------------------- #
# History: 1-minute averages                                                   #
# --------------------------------------------------------------------------- #
def _accumulate(meter: Meter, values: Mapping[str, float], at: dt.datetime) -> dict[str, object]:
    """Add a reading to the meter's running minute; flush the previous minute when a new one starts.

    ``history_sums`` holds ``{quantity: [sum, count]}``; counters hold ``[max, 1]``.
    """
    minute = at.replace(second=0, microsecond=0)
    start, samples, sums = meter.history_minute, meter.history_samples, dict(meter.history_sums)
    if start is not None and start != minute:
        _flush(meter.pk, start, samples, sums)
        start, samples, sums = None, 0, {}
    for quantity, value in values.items():
        total, count = sums.get(quantity, (0.0, 0))
        sums[quantity] = [max(total, value), 1] if quantity in COUNTERS and count else [total + value, count + 1]
    return {"history_minute": minute, "history_samples": samples + 1, "history_sums": sums}


def _flush(meter_pk: int, start: dt.datetime, samples: int, sums: Mapping[str, list[float]]) -> None:
    """Write one minute's averages; merges with a row already written for that minute (late reading)."""
    if not samples:
        return
    averages = {q: total / count for q, (total, count) in sums.items() if count and q in registers.QUANTITY_UNITS}
    existing = MeterReading.objects.filter(meter_id=meter_pk, start=start).first()
    if existing is None:
        MeterReading.objects.create(meter_id=meter_pk, start=start, samples=samples, **averages)
        return
    old = existing.samples
    for quantity, value in averages.items():
        previous = getattr(existing, quantity)
        if previous is None:
            merged = value
        elif quantity in COUNTERS:
            merged = max(previous, value)
        else:
            merged = (previous * old + value * samples) / (old + samples)
        setattr(existing, quantity, merged)
    existing.samples = old + samples
    existing.save()


def meters_flush_history(*, now: dt.datetime) -> int:
    """Write the minutes that are over for meters that got no reading since (failed, disabled)."""
    flushed = 0
    for pk in Meter.objects.filter(history_minute__lte=now - MINUTE).values_list("pk", flat=True):
        with transaction.atomic():
            meter = Meter.objects.select_for_update().get(pk=pk)
            if meter.history_minute is None or meter.history_minute > now - MINUTE:
                continue  # a poll got there first
            _flush(meter.pk, meter.history_minute, meter.history_samples, meter.history_sums)
            Meter.objects.filter(pk=pk).update(history_minute=None, history_samples=0, history_sums={})
            flushed += 1
    return flushed


def meters_prune_history(*, now: dt.datetime) -> int:
    """Delete 1-minute rows older than each meter's retention."""
    deleted = 0
    for days in Meter.objects.values_list("history_retention_days", flat=True).distinct():
        old = MeterReading.objects.filter(meter__history_retention_days=days, start__lt=now - dt.timedelta(days=days))
        deleted += old.delete()[0]
    return deleted


# --------------------------------------------------------------------------- #
# One-off read (admin "Test connection"): reads devices, writes nothing        #
# --------------------------------------------------------------------------- #
def meters_read_once(*, meters: Iterable[Meter]) -> dict[int, modbus.MeterReading | modbus.MeterError]:
    """Read each meter once, concurrently, each within its own timeout; nothing is stored."""
    results: dict[int, modbus.MeterReading | modbus.MeterError] = {}
    configs: dict[int, modbus.MeterConfig] = {}
    for meter in meters:
        try:
            configs[meter.pk] = meter.to_config()
        except (KeyError, ValueError) as exc:
            results[meter.pk] = modbus.MeterError(f"configuration: {exc}")
    if configs:
        results.update(asyncio.run(modbus.poll_meters(configs)))
    return results
