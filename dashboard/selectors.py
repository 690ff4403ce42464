"""What the dashboard shows, read in a handful of queries: the site tree and one tile per charger.

Everything here is a read. The same functions feed the first page render and the live
websocket (which re-reads every second and pushes what changed), so a tile always looks the
same whichever way it reached the browser.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db.models import F

from chargers.models import Charger, Connector, RegistrationStatus
from loadmgmt import tree
from loadmgmt.models import AnswerStatus, LimitState, SiteSettings, Zone
from transactions.energy import POWER
from transactions.models import MeterSample, Transaction, TransactionState

logger = logging.getLogger(__name__)

CURRENT = "Current.Import"
VOLTAGE_V = 230.0
_PHASE_INDEX = {"L1": 0, "L2": 1, "L3": 2, "L1-N": 0, "L2-N": 1, "L3-N": 2}
_POWER_SCALE = {"w": 1.0, "kw": 1000.0}
# Answers that mean the wanted limit did not reach the charger: shown as a warning on the tile.
PROBLEM_STATUSES = {AnswerStatus.REJECTED, AnswerStatus.NOT_SUPPORTED, AnswerStatus.CALL_ERROR,
                    AnswerStatus.NO_ANSWER, AnswerStatus.OFFLINE, AnswerStatus.NOT_SENT}
# A draw reported longer ago than this is shown as unknown rather than as the current draw.
DRAW_MAX_AGE = dt.timedelta(minutes=5)

Phases3 = tuple[float, float, float]


@dataclass(frozen=True)
class LimitView:
    """One connector's row of the loop's live state, with the reason said in words."""

    in_force_a: float | None
    in_force_paused: bool
    pending_a: float | None
    pending_paused: bool
    wanted_a: float | None
    wanted_paused: bool
    binding: str
    waiting: str
    last_status: str
    last_detail: str
    last_answer_at: dt.datetime | None

    @classmethod
    def of(cls, state: LimitState) -> LimitView:
        return cls(state.in_force_a, state.in_force_paused, state.pending_a, state.pending_paused, state.wanted_a,
                   state.wanted_paused, state.binding, state.waiting, state.last_status, state.last_detail,
                   state.last_answer_at)

    @property
    def problem(self) -> str:
        """The charger's refusal or silence about our last profile, or ''."""
        if self.last_status not in PROBLEM_STATUSES:
            return ""
        label = AnswerStatus(self.last_status).label
        return f"{label}: {self.last_detail}" if self.last_detail else label

    @property
    def reason(self) -> str:
        """Why the session is at its limit: the binding constraint, then why wanted is not in force."""
        parts = []
        if self.wanted_paused:
            parts.append(f"paused ({self.binding})" if self.binding else "paused")
        elif self.binding:
            parts.append(f"limited by {self.binding}")
        if self.waiting:
            parts.append(self.waiting)
        return "; ".join(parts)


@dataclass(frozen=True)
class SessionView:
    pk: int
    id_tag: str
    holder: str
    vip: bool  # served first in priority mode: a VIP badge or an operator's decision
    vip_set: bool  # the operator's decision on this session (the dashboard's VIP toggle)
    start_time: dt.datetime | None
    energy_wh: int | None
    power_w: float | None
    current_a: Phases3 | None
    sample_at: dt.datetime | None = field(compare=False)


@dataclass(frozen=True)
class ConnectorView:
    connector_id: int
    status: str
    error_code: str
    info: str
    status_at: dt.datetime | None
    session: SessionView | None
    limit: LimitView | None

    @property
    def has_error(self) -> bool:
        return bool(self.error_code) and self.error_code != "NoError"


@dataclass(frozen=True)
class ChargerTile:
    pk: int
    charge_point_id: str
    vendor: str
    model: str
    registration: str
    online: bool
    last_seen: dt.datetime | None = field(compare=False)  # not drawn: a heartbeat must not re-send the tile
    zone: str
    zone_pk: int | None
    phases: int
    supply_phases: tuple[int, ...]
    rated_a: float
    vip: bool
    connectors: list[ConnectorView]
    default_limit: LimitView | None  # connector 0: the charger's safe default (TxDefaultProfile)
    status: str  # OCPP status of connector 0 (the charger as a whole), when it sent one

    @property
    def power_w(self) -> float:
        return sum(c.session.power_w or 0.0 for c in self.connectors if c.session is not None)

    @property
    def sessions(self) -> list[SessionView]:
        return [c.session for c in self.connectors if c.session is not None]

    @property
    def dom_id(self) -> str:
        return f"charger-{self.pk}"


@dataclass
class PhaseBar:
    """One phase of a zone, in amps: what the building, the cars and the headroom take of the limit."""

    label: str
    limit_a: float | None
    capacity_a: float | None  # available to EV charging now (after building load, PV, held sessions)
    building_a: float | None  # measured non-EV load (dynamic zones with a fresh meter)
    ev_a: float
    headroom_a: float | None
    unit: str = "A"  # "kW" for the power row of a zone with a power limit (same fields, in kW)

    def _percent(self, value: float | None) -> float:
        """Share of the bar's scale (the zone limit, or more when overdrawn), for CSS widths."""
        scale = max(self.limit_a or 0.0, self.capacity_a or 0.0, (self.building_a or 0.0) + self.ev_a, 1.0)
        return round(100.0 * max(0.0, value or 0.0) / scale, 1)

    @property
    def building_pct(self) -> float:
        return self._percent(self.building_a)

    @property
    def ev_pct(self) -> float:
        return self._percent(self.ev_a)

    @property
    def headroom_pct(self) -> float:
        return self._percent(self.headroom_a)

    @property
    def over(self) -> bool:
        return self.headroom_a is not None and self.headroom_a < 0


@dataclass
class ZoneView:
    pk: int
    name: str
    depth: int
    mode: str
    note: str  # where the capacity comes from: static, time-of-use, dynamic, fallback, PV …
    fallback: bool
    phases: list[PhaseBar]  # L1, L2, L3, then "P" (kW) when the zone has a power limit
    limit_a: float | None  # per phase, after time-of-use
    limit_kw: float | None
    capacity_kw: float | None
    ev_kw: float
    pv_kw: float | None
    measured_at: dt.datetime | None
    chargers: int

    @property
    def dom_id(self) -> str:
        return f"zone-{self.pk}"


@dataclass
class Overview:
    zones: list[ZoneView]
    tiles: list[ChargerTile]
    problems: list[str] = field(default_factory=list)

    @property
    def online(self) -> int:
        return sum(1 for tile in self.tiles if tile.online)

    @property
    def charging(self) -> int:
        return sum(len(tile.sessions) for tile in self.tiles)

    @property
    def power_kw(self) -> float:
        return sum(tile.power_w for tile in self.tiles) / 1000.0


# --- chargers ---------------------------------------------------------------------------


_CHARGER_FIELDS = ("pk", "charge_point_id", "vendor", "model", "registration_status", "connected", "last_seen",
                   "zone_id", "zone__name", "phases", "supply_phase", "rated_max_current_a", "vip")
_CONNECTOR_FIELDS = ("charger_id", "connector_id", "status", "error_code", "info", "status_at")
_LIMIT_FIELDS = ("charger_id", "connector_id", "in_force_a", "in_force_paused", "pending_a", "pending_paused",
                 "wanted_a", "wanted_paused", "binding", "waiting", "last_status", "last_detail", "last_answer_at")


def charger_tiles(*, now: dt.datetime, charger_pks: list[int] | None = None) -> list[ChargerTile]:
    """Tiles of every charger (accepted first, then pending/rejected), or of the given ones.

    Four queries of plain rows (no model instances): the live page runs this every second.
    """
    chargers = Charger.objects.all()
    if charger_pks is not None:
        chargers = chargers.filter(pk__in=charger_pks)
    rows = list(chargers.values(*_CHARGER_FIELDS))
    pks = [row["pk"] for row in rows]
    every = charger_pks is None  # all chargers: no IN list of hundreds of ids
    connectors: dict[int, dict[int, dict[str, object]]] = defaultdict(dict)
    connector_rows = Connector.objects.all() if every else Connector.objects.filter(charger_id__in=pks)
    for connector in connector_rows.values(*_CONNECTOR_FIELDS):
        connectors[connector["charger_id"]][connector["connector_id"]] = connector
    states: dict[int, dict[int, LimitView]] = defaultdict(dict)
    state_rows = LimitState.objects.all() if every else LimitState.objects.filter(charger_id__in=pks)
    for state in state_rows.values(*_LIMIT_FIELDS):
        charger_id, connector_id = state.pop("charger_id"), state.pop("connector_id")
        states[charger_id][connector_id] = LimitView(**state)
    sessions: dict[int, dict[int, SessionView]] = defaultdict(dict)
    for (charger_id, connector_id), session in active_sessions(charger_pks=None if every else pks, now=now).items():
        sessions[charger_id][connector_id] = session
    tiles = [_tile(row, connectors[row["pk"]], states[row["pk"]], sessions[row["pk"]]) for row in rows]
    accepted = RegistrationStatus.ACCEPTED
    return sorted(tiles, key=lambda tile: (tile.registration != accepted, tile.charge_point_id.casefold()))


def _tile(charger: dict[str, Any], connectors: dict[int, dict[str, Any]], states: dict[int, LimitView],
          sessions: dict[int, SessionView]) -> ChargerTile:
    online = bool(charger["connected"])
    ids = sorted({c for c in connectors if c > 0} | set(sessions) | {c for c in states if c > 0})
    views = []
    for connector_id in ids:
        row = connectors.get(connector_id, {})
        session = sessions.get(connector_id)
        views.append(ConnectorView(
            connector_id=connector_id,
            status=_shown_status(row.get("status", ""), online),
            error_code=row.get("error_code", ""),
            info=row.get("info", ""),
            status_at=row.get("status_at"),
            session=session,
            limit=states.get(connector_id) if session is not None else None,
        ))
    phases = int(charger["phases"])
    return ChargerTile(
        pk=charger["pk"], charge_point_id=charger["charge_point_id"], vendor=charger["vendor"],
        model=charger["model"], registration=charger["registration_status"], online=online,
        last_seen=charger["last_seen"], zone=charger["zone__name"] or "", zone_pk=charger["zone_id"],
        phases=phases, supply_phases=(0, 1, 2) if phases == 3 else (int(charger["supply_phase"]) - 1,),
        rated_a=charger["rated_max_current_a"], vip=charger["vip"], connectors=views,
        default_limit=states.get(0), status=_shown_status(connectors.get(0, {}).get("status", ""), online),
    )


def _shown_status(status: str, online: bool) -> str:
    """A disconnected charger's last status is history, not its state: say it is offline."""
    if not online:
        return f"offline (last: {status})" if status else "offline"
    return status or "unknown"


def active_sessions(*, charger_pks: list[int] | None, now: dt.datetime) -> dict[tuple[int, int], SessionView]:
    """Running sessions per (charger, connector) of the given chargers (None: all), with the
    draw of their latest meter sample.

    The latest sample is found through the session's `last_sample_at`, so this reads a few
    rows per session whatever the length of its history.
    """
    running = Transaction.objects.filter(state=TransactionState.ACTIVE).order_by("start_time")
    if charger_pks is not None:
        running = running.filter(charger_id__in=charger_pks)
    rows = list(running.values("pk", "charger_id", "connector_id", "id_tag", "badge__holder", "badge__vip", "vip",
                               "start_time", "energy_wh"))
    draws = _latest_draws([row["pk"] for row in rows], now)
    views: dict[tuple[int, int], SessionView] = {}
    for row in rows:
        power_w, current_a, at = draws.get(row["pk"], (None, None, None))
        views[(row["charger_id"], row["connector_id"])] = SessionView(
            pk=row["pk"], id_tag=row["id_tag"], holder=row["badge__holder"] or "",
            vip=bool(row["badge__vip"] or row["vip"]), vip_set=bool(row["vip"]),
            start_time=row["start_time"], energy_wh=row["energy_wh"], power_w=power_w, current_a=current_a,
            sample_at=at,
        )
    return views


def _latest_draws(
    transaction_pks: list[int], now: dt.datetime
) -> dict[int, tuple[float | None, Phases3 | None, dt.datetime]]:
    if not transaction_pks:
        return {}
    # A few sessions: by id; many: every running one (one join instead of a long IN list).
    which = ({"transaction_id__in": transaction_pks} if len(transaction_pks) <= 100
             else {"transaction__state": TransactionState.ACTIVE})
    rows = (MeterSample.objects.filter(**which, measurand__in=(POWER, CURRENT),
                                       timestamp=F("transaction__last_sample_at"), value__isnull=False,
                                       timestamp__gte=now - DRAW_MAX_AGE)
            .values_list("transaction_id", "timestamp", "measurand", "phase", "unit", "value"))
    power: dict[int, float] = defaultdict(float)
    amps: dict[int, list[float]] = {}
    seen_at: dict[int, dt.datetime] = {}
    has_power: set[int] = set()
    for tx_pk, at, measurand, phase, unit, value in rows:
        if value is None:
            continue
        seen_at[tx_pk] = at
        if measurand == POWER:
            power[tx_pk] += value * _POWER_SCALE.get(unit.lower(), 1.0)
            has_power.add(tx_pk)
        else:
            phases = amps.setdefault(tx_pk, [0.0, 0.0, 0.0])
            phases[_PHASE_INDEX.get(phase, 0)] = max(phases[_PHASE_INDEX.get(phase, 0)], value)
    result: dict[int, tuple[float | None, Phases3 | None, dt.datetime]] = {}
    for tx_pk, at in seen_at.items():
        current = amps.get(tx_pk)
        watts: float | None = power[tx_pk] if tx_pk in has_power else None
        if watts is None and current is not None:
            watts = sum(current) * VOLTAGE_V  # no power measurand: estimate from the currents
        result[tx_pk] = (watts, None if current is None else (current[0], current[1], current[2]), at)
    return result


# --- zones -------------------------------------------------------------------------------


def zone_views(*, now: dt.datetime, tiles: list[ChargerTile]) -> tuple[list[ZoneView], list[str]]:
    """The zone tree, depth first, with the capacities the control loop computes right now.

    Capacities come from `loadmgmt.inputs.gather` (the loop's own inputs), so the page shows
    the numbers the allocation used, with its note on where they come from.
    """
    from loadmgmt.inputs import gather  # noqa: PLC0415 - heavy import, only where zones are drawn

    zones = list(Zone.objects.order_by("name"))
    if not zones:
        return [], []
    problems: list[str] = []
    try:
        inputs = gather(now)
        capacities = {capacity.zone.id: capacity for capacity in inputs.zones}
        problems = list(inputs.problems)
    except Exception as error:  # the page must still show the chargers when the loop's inputs fail
        logger.exception("dashboard: gathering the loop's inputs failed")
        capacities, problems = {}, [f"capacities unavailable: {type(error).__name__}: {error}"]
    settings = SiteSettings.load()
    parents = {str(zone.pk): (str(zone.parent_id) if zone.parent_id else None) for zone in zones}
    roots = [key for key, parent in parents.items() if parent is None]
    ev = tree.subtree_sums(parents, _ev_per_zone(tiles, roots))
    chargers_in = tree.subtree_sums(parents, _chargers_per_zone(tiles, roots))
    views = []
    for zone, depth in _depth_first(zones):
        views.append(_zone_view(zone, depth, capacities.get(str(zone.pk)), ev.get(str(zone.pk), (0.0, 0.0, 0.0)),
                                int(chargers_in.get(str(zone.pk), (0.0, 0.0, 0.0))[0]), now, settings))
    return views, problems


def _depth_first(zones: list[Zone]) -> list[tuple[Zone, int]]:
    children: dict[int | None, list[Zone]] = defaultdict(list)
    for zone in zones:
        children[zone.parent_id].append(zone)
    ordered: list[tuple[Zone, int]] = []

    def walk(parent: int | None, depth: int) -> None:
        for zone in children.get(parent, []):
            if depth > 16:
                return  # a loop in the tree (the admin refuses them; never spin here)
            ordered.append((zone, depth))
            walk(zone.pk, depth + 1)

    walk(None, 0)
    return ordered


def _ev_per_zone(tiles: list[ChargerTile], roots: list[str]) -> dict[str, Phases3]:
    """Measured EV draw per zone (chargers directly in it), per supply phase."""
    per_zone: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for tile in tiles:
        key = tree.charger_zone_id(tile.zone_pk, roots)
        for session in tile.sessions:
            if session.current_a is None:
                continue
            if len(tile.supply_phases) == 1:  # a single-phase charger loads its supply phase, whatever it calls it
                per_zone[key][tile.supply_phases[0]] += max(session.current_a)
            else:
                for phase in tile.supply_phases:
                    per_zone[key][phase] += session.current_a[phase]
    return {key: (v[0], v[1], v[2]) for key, v in per_zone.items()}


def _chargers_per_zone(tiles: list[ChargerTile], roots: list[str]) -> dict[str, Phases3]:
    counts: dict[str, float] = defaultdict(float)
    for tile in tiles:
        counts[tree.charger_zone_id(tile.zone_pk, roots)] += 1
    return {key: (value, value, value) for key, value in counts.items()}


def _zone_view(zone: Zone, depth: int, capacity: object, ev: Phases3, chargers: int, now: dt.datetime,
               settings: SiteSettings) -> ZoneView:
    from loadmgmt.capacity import ZoneCapacity  # noqa: PLC0415

    cap = capacity if isinstance(capacity, ZoneCapacity) else None
    fresh = zone.measured_at is not None and (now - zone.measured_at).total_seconds() <= settings.measurement_max_age_s
    measured = (zone.measured_current_l1_a, zone.measured_current_l2_a, zone.measured_current_l3_a)
    limit_a = cap.limit_current_a if cap is not None else zone.max_current_a
    phases = []
    for index in range(3):
        available = None
        if cap is not None and cap.zone.capacity_a is not None:
            available = cap.zone.capacity_a[index]
        building = None
        if zone.mode == "dynamic" and fresh and measured[index] is not None:
            building = max(0.0, float(measured[index]) - ev[index])  # type: ignore[arg-type]
        headroom = None if available is None else available - ev[index]
        phases.append(PhaseBar(f"L{index + 1}", limit_a, available, building, ev[index], headroom))
    limit_w = cap.limit_power_w if cap is not None else (None if zone.max_power_kw is None else zone.max_power_kw * 1e3)
    capacity_w = cap.zone.capacity_w if cap is not None else None
    ev_kw = sum(ev) * VOLTAGE_V / 1000.0
    if limit_w is not None:
        building_kw = None
        if zone.mode == "dynamic" and fresh and zone.measured_power_kw is not None:
            building_kw = max(0.0, zone.measured_power_kw - ev_kw)
        capacity_kw = None if capacity_w is None else capacity_w / 1000.0
        phases.append(PhaseBar("P", limit_w / 1000.0, capacity_kw, building_kw, ev_kw,
                               None if capacity_kw is None else capacity_kw - ev_kw, unit="kW"))
    return ZoneView(
        pk=zone.pk, name=zone.name, depth=depth, mode=zone.mode,
        note=cap.note if cap is not None else "capacity unknown", fallback=bool(cap and cap.fallback),
        phases=phases, limit_a=limit_a, limit_kw=None if limit_w is None else limit_w / 1000.0,
        capacity_kw=None if capacity_w is None else capacity_w / 1000.0, ev_kw=ev_kw,
        pv_kw=zone.pv_power_kw if zone.add_pv_production else None, measured_at=zone.measured_at, chargers=chargers,
    )


def overview(*, now: dt.datetime) -> Overview:
    tiles = charger_tiles(now=now)
    zones, problems = zone_views(now=now, tiles=tiles)
    return Overview(zones=zones, tiles=tiles, problems=problems)
