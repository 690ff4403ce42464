"""How much current each zone can give to EV charging right now: pure functions, no Django.

The engine shares capacity; this module computes it from what the installer configured (static
limit, time-of-use table, dynamic mode, PV) and what the meters say. The one rule that matters
most: missing or stale data gives the zone's fixed fallback, never "unlimited".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from loadmgmt.engine import Zone

PHASES = 3
Phases = tuple[float, float, float]


@dataclass(frozen=True)
class TimeOfUse:
    weekdays: frozenset[int]  # 0 = Monday
    start: dt.time
    end: dt.time  # earlier than start: the period crosses midnight
    limit_current_a: float | None = None
    limit_percent: float | None = None
    label: str = "peak"

    def active(self, local: dt.datetime) -> bool:
        clock = local.time()
        if self.start < self.end:
            return local.weekday() in self.weekdays and self.start <= clock < self.end
        # Crosses midnight: the part after midnight belongs to the previous day's rule.
        if clock >= self.start:
            return local.weekday() in self.weekdays
        return clock < self.end and (local.weekday() - 1) % 7 in self.weekdays


@dataclass(frozen=True)
class ZoneConfig:
    id: str
    name: str
    parent_id: str | None
    max_current_a: float | None
    max_power_w: float | None
    dynamic: bool = False
    fallback_current_a: float | None = None
    add_pv: bool = False
    time_of_use: tuple[TimeOfUse, ...] = ()
    pv_phases: tuple[int, ...] = (0, 1, 2)  # phases the PV inverter feeds, when the meter gives no currents


@dataclass(frozen=True)
class ZoneMeasurement:
    """The zone meter's latest reading (total consumption, EV included) and PV production."""

    at: float | None  # epoch seconds of the consumption reading
    current_a: tuple[float | None, float | None, float | None] | None = None
    power_w: float | None = None
    pv_w: float | None = None
    pv_at: float | None = None  # epoch seconds of the PV reading
    pv_current_a: tuple[float | None, float | None, float | None] | None = None  # per phase, when measured


@dataclass(frozen=True)
class ZoneCapacity:
    zone: Zone  # what the engine gets
    limit_current_a: float | None  # after time-of-use, before subtracting loads
    limit_power_w: float | None
    note: str  # human explanation: "static", "peak (time-of-use)", "stale data: fallback 32 A"…
    fallback: bool


def time_of_use_limits(config: ZoneConfig, local: dt.datetime) -> tuple[float | None, float | None, str]:
    """The zone limits in force at `local` time: the lowest active time-of-use rule wins, and its
    label is the one shown."""
    current, power, label = config.max_current_a, config.max_power_w, ""
    lowest: tuple[float, float] | None = None
    for rule in config.time_of_use:
        if not rule.active(local):
            continue
        if rule.limit_percent is not None:
            factor = rule.limit_percent / 100.0
            rule_current = None if config.max_current_a is None else config.max_current_a * factor
            rule_power = None if config.max_power_w is None else config.max_power_w * factor
        else:
            rule_current, rule_power = rule.limit_current_a, None
        current, power = lower_limit(current, rule_current), lower_limit(power, rule_power)
        rank = (rule_current if rule_current is not None else float("inf"),
                rule_power if rule_power is not None else float("inf"))
        if lowest is None or rank < lowest:
            lowest, label = rank, rule.label
    return current, power, label


def lower_limit(a: float | None, b: float | None) -> float | None:
    """The lower of two limits, None meaning "no limit" (so it never wins over a number)."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def zone_capacity(
    config: ZoneConfig,
    measurement: ZoneMeasurement | None,
    ev_current_a: Phases,
    *,
    now: float,
    local: dt.datetime,
    max_age_s: float,
    voltage_v: float = 230.0,
) -> ZoneCapacity:
    """Capacity available to EV charging in the zone (its own limit; ancestors are the engine's job).

    Dynamic: limit − (measured total − EV load measured inside the zone), per phase and in power,
    so the building's own consumption is served first. PV production, when configured and fresh,
    adds to the capacity. Stale or missing data: the fixed fallback current.
    """
    limit_a, limit_w, tou_label = time_of_use_limits(config, local)
    fresh = measurement is not None and _fresh(measurement.at, now, max_age_s)
    pv_fresh = measurement is not None and _fresh(measurement.pv_at, now, max_age_s)
    pv_w = max(0.0, measurement.pv_w or 0.0) if (pv_fresh and config.add_pv and measurement) else 0.0
    pv_a = pv_phase_currents(config, measurement, pv_w, voltage_v) if pv_w else (0.0, 0.0, 0.0)
    note = f"{tou_label} (time-of-use)" if tou_label else "static"
    if config.dynamic:
        if not fresh or not _has_needed_values(config, measurement, limit_a, limit_w):
            return _fallback(config, limit_a, limit_w)
        assert measurement is not None  # noqa: S101 - checked by `fresh`
        capacity_a = _dynamic_amps(limit_a, measurement, ev_current_a, pv_a)
        capacity_w = _dynamic_watts(limit_w, measurement, ev_current_a, pv_w, voltage_v)
        note = f"dynamic, {note}" if tou_label else "dynamic"
    else:
        capacity_a = None if limit_a is None else tuple(limit_a + pv_a[p] for p in range(PHASES))
        capacity_w = None if limit_w is None else limit_w + pv_w
    if pv_w:
        note += f", PV +{pv_w / 1000:.1f} kW"
    zone = Zone(id=config.id, parent_id=config.parent_id, name=config.name,
                capacity_a=_clamp3(capacity_a), capacity_w=None if capacity_w is None else max(0.0, capacity_w))
    return ZoneCapacity(zone, limit_a, limit_w, note, fallback=False)


def _fresh(at: float | None, now: float, max_age_s: float) -> bool:
    return at is not None and 0 <= now - at <= max_age_s


def _has_needed_values(
    config: ZoneConfig, m: ZoneMeasurement | None, limit_a: float | None, limit_w: float | None
) -> bool:
    if m is None:
        return False
    if limit_a is not None and (m.current_a is None or any(value is None for value in m.current_a)):
        return False
    return not (limit_w is not None and m.power_w is None)


def pv_phase_currents(config: ZoneConfig, m: ZoneMeasurement | None, pv_w: float, voltage_v: float) -> Phases:
    """PV current per phase: measured by the PV meter when it gives currents, else the power
    spread over the phases the inverter is configured to feed (a single-phase inverter adds to
    its phase only)."""
    if m is not None and m.pv_current_a is not None and all(v is not None for v in m.pv_current_a):
        values = [max(0.0, v or 0.0) for v in m.pv_current_a]
        # Currents that claim more than the measured power (reactive current, a CT on the wrong
        # conductor) are scaled down to it: PV must never add more than it produces.
        claimed_w = sum(values) * voltage_v
        scale = 1.0 if claimed_w <= pv_w or claimed_w == 0 else pv_w / claimed_w
        return (values[0] * scale, values[1] * scale, values[2] * scale)
    phases = config.pv_phases or (0, 1, 2)
    share = pv_w / (len(phases) * voltage_v)
    values = [share if p in phases else 0.0 for p in range(PHASES)]
    return (values[0], values[1], values[2])


def _dynamic_amps(limit_a: float | None, m: ZoneMeasurement, ev: Phases, pv_a: Phases) -> tuple[float, ...] | None:
    if limit_a is None or m.current_a is None:
        return None
    return tuple(limit_a - max(0.0, (m.current_a[p] or 0.0) - ev[p]) + pv_a[p] for p in range(PHASES))


def _dynamic_watts(
    limit_w: float | None, m: ZoneMeasurement, ev: Phases, pv_w: float, voltage_v: float
) -> float | None:
    if limit_w is None or m.power_w is None:
        return None
    ev_w = sum(ev) * voltage_v
    return limit_w - max(0.0, m.power_w - ev_w) + pv_w


def _fallback(config: ZoneConfig, limit_a: float | None, limit_w: float | None) -> ZoneCapacity:
    own = config.fallback_current_a if config.fallback_current_a is not None else 0.0
    fallback_a = lower_limit(own, limit_a) or 0.0
    zone = Zone(id=config.id, parent_id=config.parent_id, name=config.name,
                capacity_a=_clamp3((fallback_a, fallback_a, fallback_a)), capacity_w=limit_w)
    return ZoneCapacity(zone, limit_a, limit_w, f"measurement missing or stale: fallback {fallback_a:g} A", True)


def _clamp3(values: tuple[float, ...] | None) -> tuple[float, float, float] | None:
    if values is None:
        return None
    return (max(0.0, values[0]), max(0.0, values[1]), max(0.0, values[2]))
