"""Gather the control loop's inputs from the database into the engine's dataclasses.

Reads only: zones with their time-of-use rules and latest measurements, chargers, running
sessions with their recent current samples, and the loop's live state per connector
(`LimitState`: in force, pending, wanted). Thin by design: the rules are in `loadmgmt.capacity`,
`loadmgmt.safety` and `loadmgmt.engine`.

Two rules about measurements are kept here:
- a dynamic zone's meter reading is combined only with charger readings of the same window (the
  `measurement_window_s` before it, the meter's lag), taking the lowest EV draw seen in that
  window, so that the building load (total − EV) is never under-estimated;
- a car's measured draw caps its offer only from samples taken `car_response_s` after its
  limit was last raised (before that it drew what a lower limit allowed, not what it takes; a
  sample under a higher limit than today's stays good evidence).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from api.budgets import ZoneBudget, active_zone_budgets
from chargers.models import Charger, ConfigurationKey, Connector, RegistrationStatus
from evce import fastload
from loadmgmt import profiles, tree
from loadmgmt.capacity import TimeOfUse, ZoneCapacity, ZoneConfig, ZoneMeasurement, lower_limit, zone_capacity
from loadmgmt.engine import Policy, Session
from loadmgmt.engine import Zone as EngineZone
from loadmgmt.engine.planning import Holder
from loadmgmt.models import AnswerStatus, LimitState, SiteSettings, Zone, ZoneMode
from loadmgmt.safety import DefaultCharger
from transactions.models import MeterSample, Transaction, TransactionState

logger = logging.getLogger(__name__)

CURRENT = "Current.Import"
PHASE_INDEX = {"L1": 0, "L2": 1, "L3": 2, "L1-N": 0, "L2-N": 1, "L3-N": 2}
NUMBER_OF_CONNECTORS_KEY = "NumberOfConnectors"
ACCEPTED = "Accepted"

# The columns the loop reads (a charger row has 29, five of them dates to parse): a test counts
# a tick's queries, so a field missing here shows as one query per row.
CHARGER_FIELDS = ("id", "charge_point_id", "registration_status", "connected", "channel_name", "rated_max_current_a",
                  "phases", "supply_phase", "zone", "min_current_a", "vip")
TRANSACTION_FIELDS = ("id", "charger", "connector_id", "id_tag", "id_tag_status", "start_time", "created_at", "vip",
                      "energy_wh", "state")
LIMIT_STATE_UNUSED = ("purpose", "in_force_since", "pending_sent_at", "last_detail", "updated_at")
LIMIT_STATE_FIELDS = tuple(field.name for field in LimitState._meta.concrete_fields
                           if field.name not in LIMIT_STATE_UNUSED)

Phases3 = tuple[float, float, float]
# (timestamp, per-phase amps on the supply phases) of one session, oldest first.
Timeline = list[tuple[float, Phases3]]


@dataclass
class SessionContext:
    """What the plan and send steps need to know about a session besides the engine's view."""

    charger_pk: int
    charge_point_id: str
    connector_id: int
    transaction_id: int
    number_phases: int
    phases: tuple[int, ...]
    zone_id: str
    rate_unit: str
    phases_in_use: int  # phases the car was seen drawing on (a W limit is converted with it)
    state: LimitState | None  # this connector's row, when it is already for this transaction
    held_a: float
    first: bool  # no profile of its own accepted or in flight: the charger runs on its default
    in_flight_a: float | None
    can_send: bool
    vip: bool
    may_raise: bool = True


@dataclass
class ChargerContext:
    """A managed charger: the holder of a safe default (TxDefaultProfile on connector 0)."""

    charger: Charger
    zone_id: str
    connectors: int
    rate_unit: str
    online: bool
    state: LimitState | None  # its connector-0 row
    held_default_a: float  # max(in force, unsettled) default; its rating when nothing is known
    responsive: bool = True  # False: its latest profile got no answer (only decreases go to it)
    upstream_cap_a: float | None = None  # a CPO backend's limit for the whole charger (proxy)


@dataclass
class LoopInputs:
    policy: Policy
    settings: SiteSettings
    zones: list[ZoneCapacity]  # live capacities (what sessions share)
    static_zones: list[EngineZone]  # what safe defaults are shared from
    sessions: list[Session]  # controllable sessions, for the engine
    contexts: dict[str, SessionContext]
    reserved: list[Holder] = field(default_factory=list)  # sessions nobody can lower now: counted as held
    chargers: dict[int, ChargerContext] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def engine_zones(self) -> list[EngineZone]:
        return [capacity.zone for capacity in self.zones]


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


def zone_config(zone: Zone, site: SiteSettings | None = None, budget: ZoneBudget | None = None) -> ZoneConfig:
    """The zone as the capacity rules see it; a BEMS budget in force lowers its limits (never raises)."""
    site = site or SiteSettings.load()
    max_current_a, max_power_kw = zone.max_current_a, zone.max_power_kw
    if budget is not None:
        max_current_a = lower_limit(max_current_a, budget.current_a)
        max_power_kw = lower_limit(max_power_kw, budget.power_kw)
    return ZoneConfig(
        id=str(zone.pk),
        name=zone.name,
        parent_id=str(zone.parent_id) if zone.parent_id else None,
        max_current_a=max_current_a,
        max_power_w=None if max_power_kw is None else max_power_kw * 1000,
        dynamic=zone.mode == ZoneMode.DYNAMIC,
        fallback_current_a=zone.effective_fallback_a(site),
        add_pv=zone.add_pv_production,
        time_of_use=tuple(
            TimeOfUse(weekdays=rule.weekday_set(), start=rule.start_time, end=rule.end_time,
                      limit_current_a=rule.limit_current_a, limit_percent=rule.limit_percent, label=rule.label)
            for rule in zone.time_of_use.all()
        ),
        pv_phases=tuple(int(p) - 1 for p in zone.pv_phases) or (0, 1, 2),
    )


def zone_budgets(zones: list[Zone], now: dt.datetime) -> dict[int, ZoneBudget]:
    """BEMS budgets in force (setpoints, failsafe after a lost heartbeat), per zone pk."""
    return active_zone_budgets([zone.pk for zone in zones], now)


def zone_measurement(zone: Zone) -> ZoneMeasurement | None:
    if zone.measured_at is None and zone.pv_measured_at is None:
        return None
    currents = (zone.measured_current_l1_a, zone.measured_current_l2_a, zone.measured_current_l3_a)
    pv_currents = (zone.pv_current_l1_a, zone.pv_current_l2_a, zone.pv_current_l3_a)
    return ZoneMeasurement(
        at=None if zone.measured_at is None else zone.measured_at.timestamp(),
        current_a=None if all(value is None for value in currents) else currents,
        power_w=None if zone.measured_power_kw is None else zone.measured_power_kw * 1000,
        pv_w=None if zone.pv_power_kw is None else zone.pv_power_kw * 1000,
        pv_at=None if zone.pv_measured_at is None else zone.pv_measured_at.timestamp(),
        pv_current_a=None if all(value is None for value in pv_currents) else pv_currents,
    )


def gather(now: dt.datetime) -> LoopInputs:
    settings = SiteSettings.load()
    zones = list(Zone.objects.prefetch_related("time_of_use"))
    budgets = zone_budgets(zones, now)
    configs = [zone_config(zone, settings, budgets.get(zone.pk)) for zone in zones]
    managed = Charger.objects.filter(registration_status=RegistrationStatus.ACCEPTED)
    chargers = fastload.instances(managed, CHARGER_FIELDS)
    by_pk = {charger.pk: charger for charger in chargers}
    # The managed chargers as a subquery, not a list of thousands of parameters to prepare.
    managed_pks = managed.values("pk")
    active = Transaction.objects.filter(state=TransactionState.ACTIVE, charger_id__in=managed_pks)
    transactions = [tx for tx in fastload.instances(active, TRANSACTION_FIELDS) if tx.charger_id in by_pk]
    states = {(s.charger_id, s.connector_id): s
              for s in fastload.instances(LimitState.objects.filter(charger_id__in=managed_pks), LIMIT_STATE_FIELDS)
              if s.charger_id in by_pk}
    charger_contexts = _charger_contexts(chargers, tree.root_ids(configs), states, charger_rate_units(managed_pks),
                                         connector_counts(managed_pks))
    timelines = _timelines(transactions, by_pk, now - dt.timedelta(seconds=settings.measurement_max_age_s),
                           active.values("pk"))
    vip_tags = _vip_tags({tx.id_tag for tx in transactions})
    inputs = LoopInputs(site_policy(settings), settings, [], [], [], {}, chargers=charger_contexts)
    for tx in transactions:
        _add_session(inputs, tx, charger_contexts[tx.charger_id], states.get((tx.charger_id, tx.connector_id)),
                     timelines.get(tx.pk, []), tx.id_tag.upper() in vip_tags, now)
    whole_charger_zones = _cap_by_upstream(inputs, transactions, now)
    inputs.zones = [*_capacities(zones, configs, budgets, inputs, timelines, now, settings), *whole_charger_zones]
    for session in inputs.sessions:  # only now: a zone's measured EV draw counts them in the site's own zones
        inputs.contexts[session.id].zone_id = session.zone_id  # the plan keeps their sum within the charger's max
    inputs.static_zones = _static_zones(configs, settings)
    return inputs


def _cap_by_upstream(inputs: LoopInputs, transactions: list[Transaction], now: dt.datetime) -> list[ZoneCapacity]:
    """A CPO backend's charging profiles cap the local allocation (proxy app): the charger holds
    the lower of the local share and the backend's limit; a cap under a session's minimum pauses it.

    - a session's own composite (TxProfile, else TxDefault, under ChargePointMax) caps its maximum;
    - TxDefault on connector 0 applies to each connector: it caps the charger's safe default;
    - ChargePointMax limits the charger as a whole (OCPP 1.6 §3.13.2): its sessions share it in a
      zone of their own under the charger's zone (returned, for `inputs.zones`), less what its
      sessions nobody can lower hold, and its safe default, held on every connector, gets an
      equal part of it.
    """
    from proxy.caps import upstream_limits_a  # noqa: PLC0415 - the proxy is an optional feed

    caps = upstream_limits_a(now)
    if not caps:
        return []
    for charger_pk, context in inputs.chargers.items():
        default = caps.connectors.get((charger_pk, 0))
        whole = caps.charger_max.get(charger_pk)
        if whole is not None:
            default = min(whole / max(1, context.connectors), whole if default is None else default)
        context.upstream_cap_a = default
    by_session = {f"tx-{tx.pk}": caps.connectors.get((tx.charger_id, tx.connector_id)) for tx in transactions}
    inputs.sessions = [
        session if by_session.get(session.id) is None
        else replace(session, max_a=max(0.0, min(session.max_a, by_session[session.id] or 0.0)))
        for session in inputs.sessions
    ]
    return [_whole_charger_zone(inputs, inputs.chargers[pk], whole, transactions)
            for pk, whole in caps.charger_max.items() if pk in inputs.chargers]


def _whole_charger_zone(inputs: LoopInputs, context: ChargerContext, whole_a: float,
                        transactions: list[Transaction]) -> ZoneCapacity:
    """The zone a backend's ChargePointMax makes of a charger; its controllable sessions move in."""
    pk = context.charger.pk
    zone_id = f"charger-{pk}-upstream-max"
    ids = {f"tx-{tx.pk}" for tx in transactions if tx.charger_id == pk}
    held = [0.0, 0.0, 0.0]
    for holder in inputs.reserved:
        if holder.id in ids:
            for phase in holder.phases:
                held[phase] += holder.held_a * holder.count
    zone = EngineZone(id=zone_id, parent_id=context.zone_id, name=f"{context.charger.charge_point_id} backend max",
                      capacity_a=(max(0.0, whole_a - held[0]), max(0.0, whole_a - held[1]),
                                  max(0.0, whole_a - held[2])))
    inputs.sessions = [replace(session, zone_id=zone_id) if session.id in ids else session
                       for session in inputs.sessions]
    note = f"a CPO backend's ChargePointMaxProfile: {whole_a:g} A for the whole charger"
    return ZoneCapacity(zone, whole_a, None, note if not any(held) else f"{note}, {max(held):g} A held",
                        fallback=False)


def _static_zones(configs: list[ZoneConfig], settings: SiteSettings) -> list[EngineZone]:
    if not configs:
        return [tree.site_zone(settings.fallback_current_a)]
    return [tree.static_capacity(config) for config in configs]


def charger_rate_units(charger_pks: Iterable[int] | QuerySet[Any, Any]) -> dict[int, str]:
    """Charging rate unit per charger, from the ChargingScheduleAllowedChargingRateUnit it reported."""
    rows = ConfigurationKey.objects.filter(charger_id__in=charger_pks, key=profiles.RATE_UNIT_KEY)
    return {row.charger_id: profiles.rate_unit_for(row.value) for row in rows}


def charger_phases_and_rate_units(charger_pks: Sequence[int]) -> dict[int, tuple[int, str]]:
    """Charger pk -> (its phases, its charging rate unit) for these chargers, in one query: a
    booting batch's, read together rather than twice (a charger holds each configuration key
    once: a unique constraint)."""
    reported = ConfigurationKey.objects.filter(charger_id=OuterRef("pk"), key=profiles.RATE_UNIT_KEY)
    rows = Charger.objects.filter(pk__among=list(charger_pks)).values_list(
        "pk", "phases", Subquery(reported.values("value")[:1]))
    return {pk: (phases, profiles.rate_unit_for(allowed)) for pk, phases, allowed in rows}


def connector_counts(charger_pks: Iterable[int] | QuerySet[Any, Any]) -> dict[int, int]:
    """Connectors per charger: the most of what it reported (NumberOfConnectors, StatusNotifications)."""
    counts: dict[int, int] = defaultdict(lambda: 1)
    for row in ConfigurationKey.objects.filter(charger_id__in=charger_pks, key=NUMBER_OF_CONNECTORS_KEY):
        try:
            counts[row.charger_id] = max(counts[row.charger_id], min(int(row.value), 16))
        except ValueError:
            continue
    for charger_id, connector_id in Connector.objects.filter(
        charger_id__in=charger_pks, connector_id__gt=0, connector_id__lte=16
    ).values_list("charger_id", "connector_id"):
        counts[charger_id] = max(counts[charger_id], connector_id)
    return counts


def default_charger(context: ChargerContext) -> DefaultCharger:
    charger = context.charger
    max_a = charger.rated_max_current_a
    if context.upstream_cap_a is not None:
        max_a = max(0.0, min(max_a, context.upstream_cap_a))
    return DefaultCharger(pk=charger.pk, zone_id=context.zone_id, phases=charger.supply_phases,
                          connectors=context.connectors, max_a=max_a,
                          min_a=charger.min_current_a)


def _charger_contexts(
    chargers: list[Charger], roots: list[str], states: dict[tuple[int, int], LimitState], rate_units: dict[int, str],
    counts: dict[int, int],
) -> dict[int, ChargerContext]:
    silent = _unresponsive(states.values())
    contexts = {}
    for charger in chargers:
        state = states.get((charger.pk, 0))
        held = state.held_a if state is not None else None
        contexts[charger.pk] = ChargerContext(
            charger=charger, zone_id=tree.charger_zone_id(charger.zone_id, roots), connectors=counts[charger.pk],
            rate_unit=rate_units.get(charger.pk, "A"), online=charger.connected, state=state,
            held_default_a=charger.rated_max_current_a if held is None else held,
            responsive=charger.pk not in silent,
        )
    return contexts


def _unresponsive(states: Iterable[LimitState]) -> set[int]:
    """Chargers whose latest profile answer is missing (no answer, link lost).

    Raising such a charger is pointless and unsafe (it may apply a raise it never confirms, which
    then stays counted); lowering it is still tried. A later answer of any kind clears it.
    """
    latest: dict[int, LimitState] = {}
    for state in states:
        if state.last_answer_at is None:
            continue
        known = latest.get(state.charger_id)
        if known is None or (known.last_answer_at is not None and state.last_answer_at > known.last_answer_at):
            latest[state.charger_id] = state
    missing = {AnswerStatus.NO_ANSWER, AnswerStatus.OFFLINE}
    return {pk for pk, state in latest.items() if state.last_status in missing}


def _add_session(
    inputs: LoopInputs, tx: Transaction, charger: ChargerContext, state: LimitState | None, timeline: Timeline,
    vip_badge: bool, now: dt.datetime,
) -> None:
    """A controllable session for the engine, or a reserved holder when nobody can lower it now."""
    own = state if state is not None and state.transaction_id == tx.pk else None
    held, first = _held(own, charger)
    phases = charger.charger.supply_phases
    refused = bool(tx.id_tag_status) and tx.id_tag_status != ACCEPTED
    if not charger.online or refused:
        why = "refused at start" if refused else "charger offline"
        inputs.reserved.append(Holder(id=f"tx-{tx.pk}", zone_id=charger.zone_id, phases=phases, held_a=held,
                                      controllable=False, wanted_a=held))
        logger.debug("session %s reserved at %.1f A: %s", tx.pk, held, why)
        return
    try:
        session = _session(tx, charger, own, timeline, vip_badge, now, inputs.settings)
    except ValueError as error:
        message = f"charger {charger.charger.charge_point_id} isolated: {error}"
        logger.error("control loop: %s", message)
        inputs.problems.append(message)
        inputs.reserved.append(Holder(id=f"tx-{tx.pk}", zone_id=charger.zone_id, phases=phases, held_a=held,
                                      controllable=False, wanted_a=held))
        return
    inputs.sessions.append(session)
    retry_at = None if own is None else own.retry_at
    in_flight = None if own is None or (own.pending_deadline is not None and own.pending_deadline < now) \
        else own.pending_a
    inputs.contexts[session.id] = SessionContext(
        charger_pk=tx.charger_id, charge_point_id=charger.charger.charge_point_id, connector_id=tx.connector_id,
        transaction_id=tx.pk, number_phases=charger.charger.phases, phases=phases, zone_id=charger.zone_id,
        rate_unit=charger.rate_unit, phases_in_use=_phases_in_use(timeline, phases), state=own, held_a=held,
        first=first and in_flight is None, in_flight_a=in_flight, can_send=retry_at is None or retry_at <= now,
        vip=session.vip, may_raise=charger.responsive,
    )


def _held(own: LimitState | None, charger: ChargerContext) -> tuple[float, bool]:
    """What a session's connector may be drawing: its own profile, else the charger's default.

    A TxProfile sent but not accepted yet leaves the charger on its default until it is: the
    session holds max(default, unsettled profile) meanwhile.
    """
    if own is None or (own.in_force_a is None and own.pending_max_a is None):
        return charger.held_default_a, True
    base = own.in_force_a if own.in_force_a is not None else charger.held_default_a
    held = max(base, own.pending_max_a) if own.pending_max_a is not None else base
    return held, own.in_force_a is None


def _session(
    tx: Transaction, charger: ChargerContext, own: LimitState | None, timeline: Timeline, vip_badge: bool,
    now: dt.datetime, settings: SiteSettings,
) -> Session:
    row = charger.charger
    connected_at = (tx.start_time or tx.created_at).timestamp()
    offered = own.in_force_a if own is not None and own.in_force_a is not None else charger.held_default_a
    raised_at = own.raised_at if own is not None else None
    settled_after = (raised_at.timestamp() if raised_at else connected_at) + settings.car_response_s
    return Session(
        id=f"tx-{tx.pk}",
        zone_id=charger.zone_id,
        max_a=row.rated_max_current_a,
        phases=row.supply_phases,
        min_a=row.min_current_a,
        measured_a=_measured_after(timeline, settled_after),
        offered_a=offered,
        vip=vip_badge or row.vip or tx.vip,
        energy_wh=float(max(0, tx.energy_wh or 0)),
        connected_at=connected_at,
        charged_s=_charged_s(own, now),
        paused=_paused(own),
        state_since=own.state_since if own is not None and own.state_since else connected_at,
    )


def _paused(own: LimitState | None) -> bool:
    """Paused as the charger confirmed it: a pause it rejected leaves the car charging, so the
    engine must not count the session as paused (it would sit in a min-off hold while drawing)."""
    if own is None:
        return False
    if own.in_force_a is not None:
        return own.in_force_paused
    return own.wanted_paused


def _charged_s(own: LimitState | None, now: dt.datetime) -> float | None:
    if own is None:
        return None
    running_for = 0.0
    if not own.wanted_paused and own.run_counted_at is not None:
        running_for = max(0.0, now.timestamp() - own.run_counted_at)
    return own.run_seconds + running_for


def _measured_after(timeline: Timeline, after: float) -> float | None:
    """Highest phase current of the latest sample taken after the car settled on its limit."""
    if not timeline or timeline[-1][0] < after:
        return None
    return max(timeline[-1][1])


def _phases_in_use(timeline: Timeline, phases: tuple[int, ...]) -> int:
    """Phases the car draws on (1 when unknown: a W limit then allows its full value on one phase)."""
    if not timeline or len(phases) == 1:
        return 1
    in_use = sum(1 for amps in timeline[-1][1] if amps > 1.0)
    return max(1, in_use)


def _timelines(
    transactions: list[Transaction], chargers: dict[int, Charger], since: dt.datetime,
    transaction_pks: QuerySet[Any, Any],
) -> dict[int, Timeline]:
    """Recent current samples of each session, per supply phase, oldest first.

    A single-phase charger's current goes on the phase it is wired to, whatever phase label it
    reports (chargers report their own internal "L1").
    """
    by_tx = {tx.pk: tx for tx in transactions}
    rows = (
        MeterSample.objects.filter(transaction_id__in=transaction_pks, timestamp__gte=since, measurand=CURRENT,
                                   value__isnull=False)
        .order_by("timestamp", "id")
        .values_list("transaction_id", "timestamp", "phase", "value")
    )
    grouped: dict[int, dict[float, dict[str, float]]] = defaultdict(dict)
    for transaction_id, timestamp, phase, value in rows:
        if value is not None and transaction_id in by_tx:  # filtered out by the query; the type does not know
            grouped[transaction_id].setdefault(timestamp.timestamp(), {})[phase] = max(0.0, value)
    timelines: dict[int, Timeline] = {}
    for transaction_id, per_time in grouped.items():
        charger = chargers[by_tx[transaction_id].charger_id]
        timelines[transaction_id] = [(at, _per_supply_phase(values, charger.supply_phases))
                                     for at, values in sorted(per_time.items())]
    return timelines


def _per_supply_phase(values: dict[str, float], supply: tuple[int, ...]) -> Phases3:
    amps = [0.0, 0.0, 0.0]
    if len(supply) == 1:
        amps[supply[0]] = max(values.values())
        return (amps[0], amps[1], amps[2])
    phased = {PHASE_INDEX[label]: value for label, value in values.items() if label in PHASE_INDEX}
    for phase in supply:
        amps[phase] = phased.get(phase, values.get("", 0.0))
    return (amps[0], amps[1], amps[2])


def ev_lower_bound(timeline: Timeline, at: float, window_s: float, limit_cap: float | None) -> Phases3:
    """The lowest draw a session can have had while the meter took a reading stamped `at`.

    The reading reflects some instant in [at − window, at]; the session's draw at an instant is
    its latest sample before it. Samples after `at` belong to another window and are ignored. A
    session with no sample before `at` counts 0 A, and a lower limit in force caps the bound.
    """
    start = at - window_s
    before = [amps for when, amps in timeline if when <= start]
    if not before:
        return (0.0, 0.0, 0.0)  # what it drew before its first sample is unknown: it may be 0
    candidates = [before[-1], *(amps for when, amps in timeline if start < when <= at)]
    low = [min(amps[p] for amps in candidates) for p in range(3)]
    if limit_cap is not None:
        low = [min(value, limit_cap) for value in low]
    return (low[0], low[1], low[2])


def _capacities(
    zones: list[Zone], configs: list[ZoneConfig], budgets: dict[int, ZoneBudget], inputs: LoopInputs,
    timelines: dict[int, Timeline], now: dt.datetime, settings: SiteSettings,
) -> list[ZoneCapacity]:
    """Each zone's live capacity for the sessions the loop controls.

    Dynamic zones: limit − (measured total − EV draw of the same window), the EV draw being an
    EV sub-meter's reading for its whole subtree when one is fresh, else the chargers' lower
    bound. Current held by sessions nobody can lower (offline chargers, refused starts, isolated
    chargers) is taken off every zone on their path, whatever the zone type.
    """
    from meters.selectors import ev_submeter_readings  # noqa: PLC0415 - meters is an optional feed

    parents = {config.id: config.parent_id for config in configs}
    local = timezone.localtime(now)
    submeters = ev_submeter_readings([zone.pk for zone in zones], now=now, max_age_s=settings.measurement_max_age_s)
    reserved = tree.subtree_sums(parents, _per_zone_reserved(inputs.reserved))
    capacities = []
    for zone, config in zip(zones, configs, strict=True):
        measurement = zone_measurement(zone)
        ev = (0.0, 0.0, 0.0)
        if config.dynamic and measurement is not None and measurement.at is not None:
            ev = _ev_in_window(zone.pk, parents, inputs, timelines, submeters, measurement.at, settings)
        capacity = zone_capacity(config, measurement, ev, now=now.timestamp(), local=local,
                                 max_age_s=settings.measurement_max_age_s)
        budget = budgets.get(zone.pk)
        if budget is not None:
            capacity = replace(capacity, note=f"{capacity.note}, {budget.note}")
        held = reserved.get(config.id)
        capacities.append(capacity if not held or not any(held) else _minus(capacity, held))
    if not configs:
        capacities.append(_site_capacity(settings, reserved.get(tree.SITE_ZONE_ID)))
    return capacities


def _site_capacity(settings: SiteSettings, held: Phases3 | None) -> ZoneCapacity:
    zone = tree.site_zone(settings.fallback_current_a)
    capacity = ZoneCapacity(zone, settings.fallback_current_a, None, "no zones configured: site fallback current",
                            fallback=True)
    return capacity if not held or not any(held) else _minus(capacity, held)


def _per_zone_reserved(holders: list[Holder]) -> dict[str, Phases3]:
    per_zone: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for holder in holders:
        for phase in holder.phases:
            per_zone[holder.zone_id][phase] += holder.held_a * holder.count
    return {zone_id: (v[0], v[1], v[2]) for zone_id, v in per_zone.items()}


def _ev_in_window(
    zone_pk: int, parents: dict[str, str | None], inputs: LoopInputs, timelines: dict[int, Timeline],
    submeters: dict[int, tuple[float, Phases3]], at: float, settings: SiteSettings,
) -> Phases3:
    """EV draw inside a zone's subtree at the time of its meter reading (a lower bound)."""
    window = settings.measurement_window_s
    per_zone: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for context in inputs.contexts.values():
        cap = context.state.in_force_a if context.state is not None else None
        low = ev_lower_bound(timelines.get(context.transaction_id, []), at, window, cap)
        for phase in range(3):
            per_zone[context.zone_id][phase] += low[phase]
    fresh_submeters = {str(pk): amps for pk, (when, amps) in submeters.items() if abs(when - at) <= window}
    sums = tree.subtree_sums(parents, {k: (v[0], v[1], v[2]) for k, v in per_zone.items()}, fresh_submeters)
    return sums.get(str(zone_pk), (0.0, 0.0, 0.0))


def _minus(capacity: ZoneCapacity, reserved: Phases3, voltage_v: float = 230.0) -> ZoneCapacity:
    zone = capacity.zone
    amps = None if zone.capacity_a is None else tuple(
        None if value is None else max(0.0, value - reserved[p]) for p, value in enumerate(zone.capacity_a))
    watts = None if zone.capacity_w is None else max(0.0, zone.capacity_w - sum(reserved) * voltage_v)
    reduced = EngineZone(id=zone.id, parent_id=zone.parent_id, name=zone.name,
                         capacity_a=None if amps is None else (amps[0], amps[1], amps[2]), capacity_w=watts)
    note = f"{capacity.note}, {max(reserved):g} A held by sessions the loop cannot lower"
    return ZoneCapacity(reduced, capacity.limit_current_a, capacity.limit_power_w, note, capacity.fallback)


def _vip_tags(id_tags: set[str]) -> set[str]:
    """VIP badges among `id_tags`, upper-cased: badges match regardless of case, as authorization does."""
    from badges.models import Badge  # noqa: PLC0415 - badges is optional for the loop's tests

    wanted = {tag.upper() for tag in id_tags}
    if not wanted:
        return set()
    # The VIP badges are few, the sessions' tags may be thousands: fetch the former, match here.
    vip = {tag.upper() for tag in Badge.objects.filter(vip=True).values_list("id_tag", flat=True)}
    return vip & wanted
