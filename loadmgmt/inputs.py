"""Gather the control loop's inputs from the database into the engine's dataclasses.

Reads only: zones with their time-of-use rules and latest measurements, active sessions with
their latest meter samples, the limits in force. Thin by design: the rules are in
`loadmgmt.capacity` and `loadmgmt.engine`.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field, replace

from django.utils import timezone

from chargers.models import Charger, ConfigurationKey
from loadmgmt import profiles
from loadmgmt.capacity import TimeOfUse, ZoneCapacity, ZoneConfig, ZoneMeasurement, zone_capacity
from loadmgmt.engine import Policy, Session
from loadmgmt.models import AppliedLimit, SiteSettings, Zone, ZoneMode
from transactions.models import MeterSample, Transaction, TransactionState

CURRENT = "Current.Import"
ENERGY = "Energy.Active.Import.Register"
PHASE_INDEX = {"L1": 0, "L2": 1, "L3": 2, "L1-N": 0, "L2-N": 1, "L3-N": 2}


@dataclass
class SessionContext:
    """What the apply step needs to know about a session besides the engine's view."""

    charger_pk: int
    charge_point_id: str
    connector_id: int
    transaction_id: int
    number_phases: int
    rate_unit: str = "A"


@dataclass
class LoopInputs:
    policy: Policy
    settings: SiteSettings
    zones: list[ZoneCapacity]
    sessions: list[Session]
    contexts: dict[str, SessionContext]
    # Connected, accepted, managed chargers: those without a session get the safe default.
    chargers: list[Charger] = field(default_factory=list)
    # What each charger accepts as chargingRateUnit ("A" or "W"), from its configuration.
    rate_units: dict[int, str] = field(default_factory=dict)
    # The rows read for this tick, so that later steps do not read them again.
    zone_rows: list[Zone] = field(default_factory=list)
    applied: dict[tuple[int, int], AppliedLimit] = field(default_factory=dict)


def site_policy(settings: SiteSettings) -> Policy:
    return Policy(
        mode=settings.allocation_mode,  # type: ignore[arg-type]
        shedding=settings.shedding_policy,  # type: ignore[arg-type]
        rotation_period_s=float(settings.rotation_period_s),
        min_on_s=float(settings.min_on_s),
        min_off_s=float(settings.min_off_s),
        unused_margin_a=settings.unused_margin_a,
        overdraw_tolerance_a=settings.overdraw_tolerance_a,
        last_rotation_at=settings.last_rotation_at,
    )


def zone_config(zone: Zone, site: SiteSettings | None = None) -> ZoneConfig:
    return ZoneConfig(
        id=str(zone.pk),
        name=zone.name,
        parent_id=str(zone.parent_id) if zone.parent_id else None,
        max_current_a=zone.max_current_a,
        max_power_w=None if zone.max_power_kw is None else zone.max_power_kw * 1000,
        dynamic=zone.mode == ZoneMode.DYNAMIC,
        fallback_current_a=zone.effective_fallback_a(site or SiteSettings.load()),
        add_pv=zone.add_pv_production,
        time_of_use=tuple(
            TimeOfUse(weekdays=rule.weekday_set(), start=rule.start_time, end=rule.end_time,
                      limit_current_a=rule.limit_current_a, limit_percent=rule.limit_percent, label=rule.label)
            for rule in zone.time_of_use.all()
        ),
    )


def zone_measurement(zone: Zone) -> ZoneMeasurement | None:
    if zone.measured_at is None and zone.pv_measured_at is None:
        return None
    currents = (zone.measured_current_l1_a, zone.measured_current_l2_a, zone.measured_current_l3_a)
    return ZoneMeasurement(
        at=None if zone.measured_at is None else zone.measured_at.timestamp(),
        current_a=None if all(value is None for value in currents) else currents,
        power_w=None if zone.measured_power_kw is None else zone.measured_power_kw * 1000,
        pv_w=None if zone.pv_power_kw is None else zone.pv_power_kw * 1000,
        pv_at=None if zone.pv_measured_at is None else zone.pv_measured_at.timestamp(),
    )


def gather(now: dt.datetime) -> LoopInputs:
    settings = SiteSettings.load()
    zones = list(Zone.objects.prefetch_related("time_of_use"))
    chargers = list(Charger.objects.filter(connected=True, registration_status="accepted", zone__isnull=False))
    transactions = list(
        Transaction.objects.filter(state=TransactionState.ACTIVE, charger__in=chargers).select_related("charger")
    )
    since = now - dt.timedelta(seconds=settings.measurement_max_age_s)
    samples = _latest_samples([tx.pk for tx in transactions], since)
    applied = {(a.charger_id, a.connector_id): a for a in AppliedLimit.objects.filter(charger__in=chargers)}
    vip_tags = _vip_tags({tx.id_tag for tx in transactions})
    rate_units = charger_rate_units([charger.pk for charger in chargers])
    sessions, contexts, ev_by_zone = [], {}, defaultdict(lambda: [0.0, 0.0, 0.0])
    for tx in transactions:
        session, phase_currents = _session(tx, samples.get(tx.pk, {}), applied.get((tx.charger_id, tx.connector_id)),
                                           tx.id_tag in vip_tags)
        sessions.append(session)
        contexts[session.id] = SessionContext(tx.charger_id, tx.charger.charge_point_id, tx.connector_id, tx.pk,
                                              tx.charger.phases, rate_units.get(tx.charger_id, "A"))
        for phase, amps in enumerate(phase_currents):
            ev_by_zone[tx.charger.zone_id][phase] += amps
    _use_ev_submeters(ev_by_zone, [zone.pk for zone in zones], now, settings)
    capacities = _capacities(zones, ev_by_zone, _offline_reservations(chargers), now, settings)
    return LoopInputs(site_policy(settings), settings, capacities, sessions, contexts, chargers, rate_units,
                      zones, applied)


def charger_rate_units(charger_pks: list[int]) -> dict[int, str]:
    """Charging rate unit per charger, from the ChargingScheduleAllowedChargingRateUnit it reported."""
    rows = ConfigurationKey.objects.filter(charger_id__in=charger_pks, key=profiles.RATE_UNIT_KEY)
    return {row.charger_id: profiles.rate_unit_for(row.value) for row in rows}


def _use_ev_submeters(
    ev_by_zone: dict[int, list[float]], zone_ids: list[int], now: dt.datetime, settings: SiteSettings
) -> None:
    """Where an EV sub-meter measures a zone's EV feeder, its reading replaces the chargers' reports.

    A physical measurement beats the sum of chargers' MeterValues (some chargers report late
    or not at all); a stale sub-meter counts 0 A, the conservative side of limit − (total − EV).
    """
    from meters.selectors import ev_submeter_currents  # noqa: PLC0415 - meters is an optional feed

    for zone_id, currents in ev_submeter_currents(zone_ids, now=now, max_age_s=settings.measurement_max_age_s).items():
        ev_by_zone[zone_id] = list(currents)


def _subtree_sums(zones: list[Zone], per_zone: dict[int, list[float]]) -> dict[int, tuple[float, float, float]]:
    """Per-phase sums of `per_zone` over each zone's whole subtree."""
    children: dict[int | None, list[Zone]] = defaultdict(list)
    for zone in zones:
        children[zone.parent_id].append(zone)
    sums: dict[int, tuple[float, float, float]] = {}

    def total(zone: Zone) -> tuple[float, float, float]:
        acc = list(per_zone.get(zone.pk, [0.0, 0.0, 0.0]))
        for child in children.get(zone.pk, []):
            child_sum = total(child)
            acc = [acc[p] + child_sum[p] for p in range(3)]
        sums[zone.pk] = (acc[0], acc[1], acc[2])
        return sums[zone.pk]

    for root in children.get(None, []):
        total(root)
    return sums


def _capacities(
    zones: list[Zone], ev_by_zone: dict[int, list[float]], reserved_by_zone: dict[int, list[float]],
    now: dt.datetime, settings: SiteSettings,
) -> list[ZoneCapacity]:
    """Each zone's capacity: measured EV load of the subtree taken out of a dynamic zone's load,
    and current reserved for uncontrollable sessions taken off where no fresh measurement has it."""
    subtree_ev = _subtree_sums(zones, ev_by_zone)
    subtree_reserved = _subtree_sums(zones, reserved_by_zone)
    local = timezone.localtime(now)
    capacities = []
    for zone in zones:
        capacity = zone_capacity(zone_config(zone, settings), zone_measurement(zone),
                                 subtree_ev.get(zone.pk, (0.0, 0.0, 0.0)), now=now.timestamp(), local=local,
                                 max_age_s=settings.measurement_max_age_s)
        measured = zone.mode == ZoneMode.DYNAMIC and not capacity.fallback
        reserved = subtree_reserved.get(zone.pk)
        capacities.append(capacity if measured or not reserved or not any(reserved) else _minus(capacity, reserved))
    return capacities


def _minus(capacity: ZoneCapacity, reserved: tuple[float, float, float], voltage_v: float = 230.0) -> ZoneCapacity:
    zone = capacity.zone
    amps = None if zone.capacity_a is None else tuple(
        None if value is None else max(0.0, value - reserved[p]) for p, value in enumerate(zone.capacity_a))
    watts = None if zone.capacity_w is None else max(0.0, zone.capacity_w - sum(reserved) * voltage_v)
    reduced = replace(zone, capacity_a=amps, capacity_w=watts)
    note = f"{capacity.note}, {max(reserved):g} A held by offline chargers"
    return replace(capacity, zone=reduced, note=note)


def _offline_reservations(chargers: list[Charger]) -> dict[int, list[float]]:
    """Current that sessions on unreachable chargers may still draw, per zone and phase.

    A charger that lost its link keeps charging at the last limit it received: the loop cannot
    lower it, so that current is not shared out to others. Without a known limit the charger's
    rating is assumed (the safe side).
    """
    managed = {charger.pk for charger in chargers}
    stranded = list(Transaction.objects.filter(state=TransactionState.ACTIVE, charger__zone__isnull=False)
                    .exclude(charger__in=managed).select_related("charger"))
    if not stranded:
        return {}
    applied = {(a.charger_id, a.connector_id): a
               for a in AppliedLimit.objects.filter(charger_id__in={tx.charger_id for tx in stranded})}
    reserved: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for tx in stranded:
        limit = _last_known_limit(tx, applied)
        for phase in tx.charger.supply_phases:
            reserved[tx.charger.zone_id][phase] += limit
    return reserved


def _last_known_limit(tx: Transaction, applied: dict[tuple[int, int], AppliedLimit]) -> float:
    own = applied.get((tx.charger_id, tx.connector_id))
    if own is not None and own.transaction_id == tx.pk and own.status == "Accepted":
        return own.limit_a
    default = applied.get((tx.charger_id, 0))  # the TxDefaultProfile governs a session without its own
    if default is not None and default.status == "Accepted":
        return default.limit_a
    return tx.charger.rated_max_current_a


def _latest_samples(transaction_ids: list[int], since: dt.datetime) -> dict[int, dict[tuple[str, str], float]]:
    """Latest value per (measurand, phase) of each transaction, among recent samples."""
    latest: dict[int, dict[tuple[str, str], float]] = defaultdict(dict)
    if not transaction_ids:
        return latest
    rows = (
        MeterSample.objects.filter(transaction_id__in=transaction_ids, timestamp__gte=since,
                                   measurand__in=[CURRENT, ENERGY], value__isnull=False)
        .order_by("timestamp", "id")
        .values_list("transaction_id", "measurand", "phase", "value")
    )
    for transaction_id, measurand, phase, value in rows:
        latest[transaction_id][(measurand, phase)] = value
    return latest


def _vip_tags(id_tags: set[str]) -> set[str]:
    from badges.models import Badge  # noqa: PLC0415 - badges is optional for the loop's tests

    return set(Badge.objects.filter(id_tag__in=id_tags, vip=True).values_list("id_tag", flat=True))


def _session(
    tx: Transaction, samples: dict[tuple[str, str], float], applied: AppliedLimit | None, vip_badge: bool
) -> tuple[Session, tuple[float, float, float]]:
    charger = tx.charger
    phases = charger.supply_phases
    phase_currents = [0.0, 0.0, 0.0]
    for (measurand, phase), value in samples.items():
        if measurand == CURRENT and phase in PHASE_INDEX:
            phase_currents[PHASE_INDEX[phase]] = max(0.0, value)
    unphased = samples.get((CURRENT, ""))
    if unphased is not None and not any(phase_currents):
        for phase in phases:
            phase_currents[phase] = max(0.0, unphased)
    measured = max(phase_currents) if (any(phase_currents) or unphased is not None) else None
    energy = samples.get((ENERGY, ""))
    energy_wh = max(0.0, energy - tx.meter_start_wh) if energy is not None and tx.meter_start_wh is not None else 0.0
    current_tx = applied is not None and applied.transaction_id == tx.pk
    connected_at = (tx.start_time or tx.created_at).timestamp()
    session = Session(
        id=f"tx-{tx.pk}",
        zone_id=str(charger.zone_id),
        max_a=charger.rated_max_current_a,
        phases=phases,
        min_a=charger.min_current_a,
        measured_a=measured,
        offered_a=applied.limit_a if current_tx else None,
        vip=vip_badge or charger.vip,
        energy_wh=energy_wh,
        connected_at=connected_at,
        paused=bool(current_tx and applied.paused),
        state_since=applied.state_since if current_tx else connected_at,
    )
    return session, (phase_currents[0], phase_currents[1], phase_currents[2])
