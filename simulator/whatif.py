"""What-if: replay a day of car arrivals against a site configuration, on a simulated clock.

No websockets, no database, no Django: the site (zones as :class:`loadmgmt.capacity.ZoneConfig`,
chargers as :class:`WhatIfCharger`) and the arrivals are plain data; every ``step_s`` simulated
seconds the pure engine (:func:`loadmgmt.engine.allocate`) shares the zones' capacity between
the sessions exactly as the control loop would, and each car draws what it is given (up to its
own maximum, until its demand is met). ``manage.py simulate_fleet --what-if`` builds the site
from the database and prints :func:`format_report`.

Steps of :func:`replay`, per simulated step:
1. cars whose departure time has come leave (a car waiting for a free charger gives up then);
2. arriving cars take a free charger (the one they name, else the first free one), or wait;
3. zone capacities at this time (time-of-use, dynamic zones against the building load);
4. ``allocate()`` with each session's state carried over (paused, state since, energy, measured draw);
5. cars draw ``min(limit, car max)`` on their phases for the step; energy, pauses and peaks are recorded.

Simplifications, stated so the figures are read right: a charger follows a new limit within the
step (no network latency, no rejected profiles), the car draws exactly what it may (no taper near
full), voltage is the nominal 230 V.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from loadmgmt import tree
from loadmgmt.capacity import ZoneCapacity, ZoneConfig, ZoneMeasurement, zone_capacity
from loadmgmt.engine import Policy, Session, allocate
from loadmgmt.engine import Zone as EngineZone

VOLTAGE_V = 230.0
DAY_S = 86_400.0
PROFILES = ("office", "retail", "overnight")
CSV_COLUMNS = ("arrival", "departure", "energy_kwh", "max_current_a", "phases", "vip", "charger")


@dataclass(frozen=True)
class Arrival:
    """One car: when it comes and goes (seconds after the day's start), what it wants and can take."""

    car_id: str
    arrival_s: float
    departure_s: float
    energy_kwh: float
    max_current_a: float = 32.0
    phases: int = 3  # the car's on-board charger: 1 or 3 phases
    vip: bool = False  # a VIP badge
    charger: str | None = None  # the charger it wants, if any


@dataclass(frozen=True)
class WhatIfCharger:
    """A charger of the site, as the engine sees it."""

    cp_id: str
    zone_id: str  # engine zone id (see loadmgmt.tree.charger_zone_id)
    rated_a: float = 32.0
    supply_phases: tuple[int, ...] = (0, 1, 2)
    min_a: float = 6.0
    vip: bool = False


@dataclass
class SessionOutcome:
    """What one car got."""

    car_id: str
    charger: str | None
    vip: bool
    arrival_s: float
    departure_s: float
    requested_kwh: float
    delivered_kwh: float = 0.0
    plugged_at_s: float | None = None  # None: never found a free charger
    waited_s: float = 0.0  # waiting for a free charger
    paused_s: float = 0.0  # plugged in, wanting energy, limit 0 (shed)
    paused_times: int = 0  # running → paused transitions

    @property
    def shed(self) -> bool:
        return self.paused_times > 0

    @property
    def satisfied(self) -> bool:
        return self.delivered_kwh >= self.requested_kwh - 1e-6


@dataclass
class ZonePeak:
    """The highest draw seen in a zone's subtree per phase, with the capacity at that moment."""

    zone_id: str
    name: str
    peak_a: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    capacity_at_peak_a: list[float | None] = field(default_factory=lambda: [None, None, None])
    peak_w: float = 0.0
    capacity_at_peak_w: float | None = None
    over_capacity_steps: int = 0  # steps where the draw exceeded the capacity (must stay 0)
    energy_kwh: float = 0.0  # drawn by the cars in the subtree (a cross-check of the sessions' sum)


@dataclass
class WhatIfReport:
    sessions: list[SessionOutcome]
    zones: list[ZonePeak]
    step_s: float
    simulated_s: float
    steps: int

    @property
    def requested_kwh(self) -> float:
        return sum(s.requested_kwh for s in self.sessions)

    @property
    def delivered_kwh(self) -> float:
        return sum(s.delivered_kwh for s in self.sessions)

    def as_dict(self) -> dict[str, Any]:
        vip = [s for s in self.sessions if s.vip]
        return {
            "step_s": self.step_s, "simulated_s": self.simulated_s, "steps": self.steps,
            "requested_kwh": round(self.requested_kwh, 3), "delivered_kwh": round(self.delivered_kwh, 3),
            "sessions": len(self.sessions),
            "never_plugged": sum(1 for s in self.sessions if s.plugged_at_s is None),
            "shed_sessions": sum(1 for s in self.sessions if s.shed),
            "paused_minutes": round(sum(s.paused_s for s in self.sessions) / 60, 1),
            "waiting_minutes": round(sum(s.waited_s for s in self.sessions) / 60, 1),
            "vip": {"sessions": len(vip), "requested_kwh": round(sum(s.requested_kwh for s in vip), 3),
                    "delivered_kwh": round(sum(s.delivered_kwh for s in vip), 3),
                    "satisfied": sum(1 for s in vip if s.satisfied),
                    "paused_minutes": round(sum(s.paused_s for s in vip) / 60, 1)},
            "per_session": [
                {"car": s.car_id, "charger": s.charger, "vip": s.vip, "arrival_s": s.arrival_s,
                 "departure_s": s.departure_s, "requested_kwh": round(s.requested_kwh, 3),
                 "delivered_kwh": round(s.delivered_kwh, 3), "waited_min": round(s.waited_s / 60, 1),
                 "paused_min": round(s.paused_s / 60, 1), "paused_times": s.paused_times}
                for s in self.sessions],
            "zones": [
                {"zone": z.zone_id, "name": z.name, "peak_a": [round(v, 1) for v in z.peak_a],
                 "capacity_at_peak_a": [None if v is None else round(v, 1) for v in z.capacity_at_peak_a],
                 "peak_kw": round(z.peak_w / 1000, 2),
                 "capacity_at_peak_kw": None if z.capacity_at_peak_w is None else round(z.capacity_at_peak_w / 1000, 2),
                 "energy_kwh": round(z.energy_kwh, 3), "over_capacity_steps": z.over_capacity_steps}
                for z in self.zones],
        }


@dataclass
class _Plugged:
    """A car on a charger, with the state the engine carries from tick to tick."""

    arrival: Arrival
    outcome: SessionOutcome
    charger: WhatIfCharger
    connected_at: float
    limit_a: float = 0.0
    offered_a: float | None = None
    draw_a: float = 0.0
    raised_at: float = 0.0
    paused: bool = False
    state_since: float = 0.0
    charged_s: float = 0.0

    @property
    def car_phases(self) -> tuple[int, ...]:
        """Phases the car really loads: a single-phase car on a three-phase charger uses its first one."""
        return self.charger.supply_phases[:1] if self.arrival.phases == 1 else self.charger.supply_phases

    @property
    def wants_energy(self) -> bool:
        return self.outcome.delivered_kwh < self.arrival.energy_kwh - 1e-9


def replay(
    zones: Sequence[ZoneConfig],
    chargers: Sequence[WhatIfCharger],
    arrivals: Iterable[Arrival],
    *,
    policy: Policy,
    day_start: dt.datetime,
    step_s: float = 10.0,
    building_a: dict[str, tuple[float, float, float]] | None = None,
    car_response_s: float = 5.0,
    site_fallback_a: float = 10.0,
) -> WhatIfReport:
    """Run the day (from the first arrival to the last departure) and report what each car got.

    ``day_start``: aware datetime of second 0 (local time drives time-of-use rules);
    ``building_a``: the constant non-EV load per phase measured in dynamic zones (default none).
    """
    if step_s <= 0:
        raise ValueError("step_s must be > 0")
    if not chargers:
        raise ValueError("the site has no charger")
    plan = sorted(arrivals, key=lambda a: (a.arrival_s, a.car_id))
    outcomes = {a.car_id: SessionOutcome(a.car_id, None, a.vip, a.arrival_s, a.departure_s, a.energy_kwh)
                for a in plan}
    if len(outcomes) != len(plan):
        raise ValueError("car ids must be unique")
    configs = list(zones)
    parents = {c.id: c.parent_id for c in configs}
    peaks = {c.id: ZonePeak(c.id, c.name) for c in configs} or {tree.SITE_ZONE_ID: ZonePeak(tree.SITE_ZONE_ID, "site")}
    plugged: dict[str, _Plugged] = {}
    waiting: list[Arrival] = []
    pending = list(plan)
    t = plan[0].arrival_s if plan else 0.0
    end = max((a.departure_s for a in plan), default=t)
    steps = 0
    current_policy = policy
    while t < end:
        now = day_start.timestamp() + t
        _leave(plugged, waiting, t)
        while pending and pending[0].arrival_s <= t:
            waiting.append(pending.pop(0))
        _plug(waiting, plugged, chargers, outcomes, t, now)
        ev = _ev_per_zone(plugged.values())
        capacities = _capacities(configs, parents, ev, building_a or {}, now, day_start.tzinfo, site_fallback_a)
        sessions = [_session(p, now, car_response_s) for p in plugged.values()]
        allocation = allocate([c.zone for c in capacities], sessions, current_policy, now)
        current_policy = _with_rotation(current_policy, allocation.last_rotation_at)
        for p in plugged.values():
            _follow(p, allocation.limits[p.charger.cp_id], now, step_s)
        for a in waiting:
            outcomes[a.car_id].waited_s += step_s
        _record_peaks(peaks, capacities, parents, _ev_per_zone(plugged.values(), draw=True), step_s)
        t += step_s
        steps += 1
    return WhatIfReport([outcomes[a.car_id] for a in plan], list(peaks.values()), step_s,
                        steps * step_s, steps)


def _leave(plugged: dict[str, _Plugged], waiting: list[Arrival], t: float) -> None:
    for cp_id in [cp for cp, p in plugged.items() if p.arrival.departure_s <= t]:
        del plugged[cp_id]
    waiting[:] = [a for a in waiting if a.departure_s > t]


def _plug(
    waiting: list[Arrival], plugged: dict[str, _Plugged], chargers: Sequence[WhatIfCharger],
    outcomes: dict[str, SessionOutcome], t: float, now: float,
) -> None:
    for arrival in list(waiting):
        free = [c for c in chargers if c.cp_id not in plugged]
        wanted = [c for c in free if c.cp_id == arrival.charger]
        choice = (wanted or ([] if arrival.charger and any(c.cp_id == arrival.charger for c in chargers) else free))
        if not choice:
            continue
        charger = choice[0]
        outcome = outcomes[arrival.car_id]
        outcome.charger, outcome.plugged_at_s = charger.cp_id, t
        plugged[charger.cp_id] = _Plugged(arrival, outcome, charger, connected_at=now, state_since=now, raised_at=now)
        waiting.remove(arrival)


def _session(p: _Plugged, now: float, car_response_s: float) -> Session:
    # The car's draw caps its offer only once it had time to follow the last raise, as in the loop.
    settled = now - p.raised_at >= car_response_s and p.offered_a is not None
    return Session(
        id=p.charger.cp_id, zone_id=p.charger.zone_id, max_a=p.charger.rated_a, phases=p.charger.supply_phases,
        min_a=p.charger.min_a, measured_a=p.draw_a if settled else None, offered_a=p.offered_a,
        vip=p.arrival.vip or p.charger.vip, energy_wh=p.outcome.delivered_kwh * 1000, connected_at=p.connected_at,
        charged_s=p.charged_s, paused=p.paused, state_since=p.state_since,
    )


def _follow(p: _Plugged, decision: Any, now: float, step_s: float) -> None:
    """The charger applies the limit at once; the car draws what it may until its demand is met."""
    if decision.limit_a > (p.offered_a or 0.0):
        p.raised_at = now
    if decision.paused and not p.paused and p.wants_energy:
        p.outcome.paused_times += 1
    p.paused, p.state_since = decision.paused, decision.state_since
    p.limit_a = p.offered_a = decision.limit_a
    remaining_kwh = max(0.0, p.arrival.energy_kwh - p.outcome.delivered_kwh)
    draw = min(decision.limit_a, p.arrival.max_current_a) if remaining_kwh > 0 else 0.0
    power_kw = draw * VOLTAGE_V * len(p.car_phases) / 1000
    if power_kw > 0 and power_kw * step_s / 3600 > remaining_kwh:
        draw *= remaining_kwh / (power_kw * step_s / 3600)  # the last kWh: the car stops within the step
        power_kw = draw * VOLTAGE_V * len(p.car_phases) / 1000
    p.draw_a = draw
    p.outcome.delivered_kwh += power_kw * step_s / 3600
    if decision.paused and remaining_kwh > 0:
        p.outcome.paused_s += step_s
    elif not decision.paused:
        p.charged_s += step_s


def _ev_per_zone(plugged: Iterable[_Plugged], draw: bool = False) -> dict[str, tuple[float, float, float]]:
    """Per zone (not subtree) the EV current per phase: the limits held, or what the cars draw."""
    totals: dict[str, list[float]] = {}
    for p in plugged:
        acc = totals.setdefault(p.charger.zone_id, [0.0, 0.0, 0.0])
        value = p.draw_a if draw else p.limit_a
        for phase in (p.car_phases if draw else p.charger.supply_phases):
            acc[phase] += value
    return {zone: (v[0], v[1], v[2]) for zone, v in totals.items()}


def _capacities(
    configs: list[ZoneConfig], parents: dict[str, str | None], ev: dict[str, tuple[float, float, float]],
    building_a: dict[str, tuple[float, float, float]], now: float, tz: dt.tzinfo | None, site_fallback_a: float,
) -> list[ZoneCapacity]:
    if not configs:
        zone = tree.site_zone(site_fallback_a)
        return [ZoneCapacity(zone, site_fallback_a, None, "site fallback", fallback=False)]
    local = dt.datetime.fromtimestamp(now, tz)
    ev_sub = tree.subtree_sums(parents, ev)
    building_sub = tree.subtree_sums(parents, building_a)
    result = []
    for config in configs:
        measurement = None
        if config.dynamic:  # its meter: the building load plus the EV load inside it
            e, b = ev_sub.get(config.id, (0.0, 0.0, 0.0)), building_sub.get(config.id, (0.0, 0.0, 0.0))
            total = (e[0] + b[0], e[1] + b[1], e[2] + b[2])
            measurement = ZoneMeasurement(at=now, current_a=total, power_w=sum(total) * VOLTAGE_V)
        result.append(zone_capacity(config, measurement, ev_sub.get(config.id, (0.0, 0.0, 0.0)), now=now,
                                    local=local, max_age_s=60.0))
    return result


def _record_peaks(
    peaks: dict[str, ZonePeak], capacities: list[ZoneCapacity], parents: dict[str, str | None],
    draw: dict[str, tuple[float, float, float]], step_s: float,
) -> None:
    sub = tree.subtree_sums(parents, draw) if parents else {tree.SITE_ZONE_ID: draw.get(tree.SITE_ZONE_ID, (0.0,) * 3)}
    for capacity in capacities:
        zone: EngineZone = capacity.zone
        peak = peaks[zone.id]
        amps = sub.get(zone.id, (0.0, 0.0, 0.0))
        watts = sum(amps) * VOLTAGE_V
        peak.energy_kwh += watts * step_s / 3_600_000
        over = False
        for phase in range(3):
            cap = None if zone.capacity_a is None else zone.capacity_a[phase]
            if amps[phase] > peak.peak_a[phase]:
                peak.peak_a[phase], peak.capacity_at_peak_a[phase] = amps[phase], cap
            over = over or (cap is not None and amps[phase] > cap + 0.05)
        if watts > peak.peak_w:
            peak.peak_w, peak.capacity_at_peak_w = watts, zone.capacity_w
        over = over or (zone.capacity_w is not None and watts > zone.capacity_w * 1.001 + 1.0)
        peak.over_capacity_steps += over


def _with_rotation(policy: Policy, last_rotation_at: float | None) -> Policy:
    if last_rotation_at == policy.last_rotation_at:
        return policy
    return replace(policy, last_rotation_at=last_rotation_at)


# ---------------------------------------------------------------- arrivals: CSV and built-in days
def parse_clock(text: str) -> float:
    """``HH:MM``, ``HH:MM:SS`` or seconds → seconds after the day's start (``24:30`` is the next day)."""
    text = text.strip()
    if ":" in text:
        parts = [float(part) for part in text.split(":")]
        if len(parts) > 3:
            raise ValueError(f"bad time {text!r}")
        return sum(value * 60 ** (2 - index) for index, value in enumerate(parts + [0.0] * (3 - len(parts))))
    return float(text)


def _truth(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "y", "vip"):
        return True
    if value in ("", "0", "false", "no", "n"):
        return False
    raise ValueError(f"vip: expected yes/no, got {text!r}")


def read_arrivals(text: str) -> list[Arrival]:
    """Arrivals from CSV text with a header: arrival, departure, energy_kwh[, max_current_a, phases, vip, charger].

    Errors name the line: ``line 3: departure 07:00 is not after arrival 08:00``.
    """
    rows = csv.DictReader(io.StringIO(text))
    missing = {"arrival", "departure", "energy_kwh"} - set(rows.fieldnames or ())
    if missing:
        raise ValueError(f"missing column(s): {', '.join(sorted(missing))} (columns: {', '.join(CSV_COLUMNS)})")
    arrivals = []
    for line, row in enumerate(rows, start=2):
        try:
            arrival, departure = parse_clock(row["arrival"]), parse_clock(row["departure"])
            if departure <= arrival:
                raise ValueError(f"departure {row['departure']} is not after arrival {row['arrival']}")
            phases = int(row.get("phases") or 3)
            if phases not in (1, 3):
                raise ValueError("phases must be 1 or 3")
            energy, max_a = float(row["energy_kwh"]), float(row.get("max_current_a") or 32)
            if energy < 0 or max_a <= 0:
                raise ValueError("energy_kwh must be >= 0 and max_current_a > 0")
            arrivals.append(Arrival(f"car-{line - 1:04d}", arrival, departure, energy, max_a, phases,
                                    _truth(row.get("vip") or ""), (row.get("charger") or "").strip() or None))
        except (TypeError, ValueError) as error:
            raise ValueError(f"line {line}: {error}") from error
    return arrivals


def builtin_arrivals(profile: str, cars: int, seed: int = 1) -> list[Arrival]:
    """A reproducible day: ``office`` (8-9 h stays from 7-10 h), ``retail`` (1-3 h stays 9-20 h),
    ``overnight`` (fleet back 17-20 h, out 6-8 h). One car in ten has a VIP badge; a quarter are
    single-phase cars limited to 16-32 A."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (built-in: {', '.join(PROFILES)})")
    rng = random.Random(seed)  # noqa: S311 - a reproducible scenario, not security
    result = []
    for n in range(cars):
        if profile == "office":
            arrival = rng.uniform(7, 10) * 3600
            departure = arrival + rng.uniform(8, 9) * 3600
            energy = rng.uniform(8, 35)
        elif profile == "retail":
            arrival = rng.uniform(9, 19) * 3600
            departure = arrival + rng.uniform(1, 3) * 3600
            energy = rng.uniform(5, 25)
        else:
            arrival = rng.uniform(17, 20) * 3600
            departure = DAY_S + rng.uniform(6, 8) * 3600
            energy = rng.uniform(20, 60)
        single = rng.random() < 0.25
        result.append(Arrival(f"car-{n + 1:04d}", round(arrival), round(departure), round(energy, 1),
                              rng.choice((16.0, 32.0)) if single else rng.choice((16.0, 32.0, 32.0)),
                              1 if single else 3, vip=rng.random() < 0.1))
    return result


def format_report(report: WhatIfReport, per_session: bool = False) -> str:
    """The summary table (and, optionally, one line per session)."""
    data = report.as_dict()
    vip = data["vip"]
    lines = [
        f"simulated {report.simulated_s / 3600:.1f} h in {report.steps} steps of {report.step_s:g} s",
        f"{'':28} {'value':>12}",
        f"{'sessions':28} {data['sessions']:>12}",
        f"{'energy requested (kWh)':28} {data['requested_kwh']:>12.1f}",
        f"{'energy delivered (kWh)':28} {data['delivered_kwh']:>12.1f}",
        f"{'sessions fully served':28} {sum(1 for s in report.sessions if s.satisfied):>12}",
        f"{'sessions shed (paused)':28} {data['shed_sessions']:>12}",
        f"{'paused minutes':28} {data['paused_minutes']:>12.1f}",
        f"{'cars never plugged in':28} {data['never_plugged']:>12}",
        f"{'minutes waiting for a plug':28} {data['waiting_minutes']:>12.1f}",
        f"{'VIP sessions / served fully':28} {vip['sessions']:>6} / {vip['satisfied']:<5}",
        f"{'VIP kWh requested/delivered':28} {vip['requested_kwh']:>6.1f} / {vip['delivered_kwh']:<6.1f}",
        f"{'VIP paused minutes':28} {vip['paused_minutes']:>12.1f}",
        "",
        f"{'zone':24} {'peak A L1/L2/L3':>20} {'capacity A at peak':>22} {'peak kW':>8} {'cap kW':>8} {'over':>5}",
    ]
    for zone in data["zones"]:
        caps = "/".join("-" if v is None else f"{v:g}" for v in zone["capacity_at_peak_a"])
        cap_kw = "-" if zone["capacity_at_peak_kw"] is None else f"{zone['capacity_at_peak_kw']:g}"
        lines.append(f"{zone['name'][:24]:24} {'/'.join(f'{v:g}' for v in zone['peak_a']):>20} {caps:>22} "
                     f"{zone['peak_kw']:>8g} {cap_kw:>8} {zone['over_capacity_steps']:>5}")
    if per_session:
        lines += ["", f"{'car':10} {'charger':12} {'vip':>3} {'req kWh':>8} {'got kWh':>8} {'wait min':>8} "
                      f"{'paused min':>10}"]
        lines += [f"{s['car']:10} {s['charger'] or '-':12} {'yes' if s['vip'] else '':>3} {s['requested_kwh']:>8.1f} "
                  f"{s['delivered_kwh']:>8.1f} {s['waited_min']:>8.1f} {s['paused_min']:>10.1f}"
                  for s in data["per_session"]]
    return "\n".join(lines)
