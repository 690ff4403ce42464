"""allocate(): one control tick, from zone capacities and sessions to per-session limits.

Steps:
1. Index the zone tree as integer constraints (network.py).
2. Work out each session's ceiling (session max, charger max, measured draw) and whether it may
   run at all (known zone, ceiling >= minimum, not inside its minimum off-time).
3. Decide who runs: greedy admission at minimum current in shedding order (admission.py).
4. Share what is left above the minimums by water filling (filling.py): everyone together in
   equal mode; VIPs first, then the others, in priority mode.
5. Report limits, bindings, overdraw flags and per-zone usage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .admission import admission_order, admit, min_off_hold, rotation_due
from .filling import OWN_CEILING, Fill, water_fill
from .model import (
    CHARGER_MAX,
    MEASURED_DRAW,
    MIN_OFF_HOLD,
    SESSION_MAX,
    SHED,
    UNKNOWN_ZONE,
    Allocation,
    Policy,
    Session,
    SessionLimit,
    Zone,
    ZoneUsage,
)
from .network import Network, build_network, ceil_units, demand, floor_units, restrict


@dataclass(slots=True)
class _Prepared:
    """Per-session working arrays (indexed like the sessions) for the integer core."""

    lo: list[int]  # minimum, deci-amps, rounded up
    hi: list[int]  # ceiling, deci-amps, rounded down
    hi_reason: list[str]
    sig_of: list[int]  # constraint signature; -1 when the zone is unknown
    forced: dict[int, str]  # sessions paused whatever the capacity, with the reason
    candidates: list[int]  # all the others


def allocate(zones: Sequence[Zone], sessions: Sequence[Session], policy: Policy, now: float) -> Allocation:
    """Compute this tick's limits. Pure: the same arguments always give the same result."""
    _check_unique(sessions)
    net = build_network(zones)
    rotate = rotation_due(policy, now)
    prep = _prepare(sessions, net, policy, now)
    running, blocked = _decide_running(sessions, prep, net, policy, now, rotate)
    fill = _share(running, sessions, prep, net, policy)
    return Allocation(
        limits=_limits(sessions, prep, net, fill, blocked, policy, now),
        zones=_zone_usage(net, prep, fill),
        rotated=rotate,
        last_rotation_at=now if rotate else policy.last_rotation_at,
    )


def session_ceiling(session: Session, policy: Policy) -> tuple[float, str]:
    """The current a session would be filled up to with unlimited capacity, and why.

    Public so the dashboard (and the tests) can show "offered up to X A because ...".
    """
    hi, reason = _ceiling(session, policy, ceil_units(session.min_a, 10), {})
    return hi / 10, reason


def _check_unique(sessions: Sequence[Session]) -> None:
    """Limits are keyed by session id: a duplicate would silently lose one session's limit."""
    if len({s.id for s in sessions}) != len(sessions):
        raise ValueError("session ids must be unique")


def _ceiling(session: Session, policy: Policy, lo: int, grid: dict[float, int]) -> tuple[int, str]:
    """Lowest of session max, charger max and measured draw + margin, in deci-amps.

    `grid` memoises float -> deci-amps: a site has few distinct max values, and this runs once
    per session per tick.
    """
    hi = grid.get(session.max_a)
    if hi is None:
        hi = grid[session.max_a] = floor_units(session.max_a, 10)
    reason = SESSION_MAX
    if session.charger_max_a is not None:
        charger = floor_units(session.charger_max_a, 10)
        if charger < hi:
            hi, reason = charger, CHARGER_MAX
    if session.measured_a is not None and not session.paused:
        draw = _draw_ceiling(session, policy, hi, lo)
        if draw < hi:
            hi, reason = draw, MEASURED_DRAW
    return hi, reason


def _draw_ceiling(session: Session, policy: Policy, hi: int, lo: int) -> int:
    """Cap a car that clearly draws less than offered at its draw + margin (never below min).

    "Clearly" means more than half the margin below the offer: a car settled at the capped
    offer (draw + margin) stays capped, while a car ramping up towards the cap crosses the
    threshold and is offered its full ceiling again at the next tick. Without that hysteresis
    the offer would jump between the cap and the ceiling on every tick.
    """
    measured = session.measured_a
    if measured is None or not math.isfinite(measured):
        return hi
    offered = session.offered_a if session.offered_a is not None else hi / 10
    if measured >= offered - policy.unused_margin_a / 2:
        return hi
    return max(floor_units(max(measured, 0.0) + policy.unused_margin_a, 10), lo)


def _prepare(sessions: Sequence[Session], net: Network, policy: Policy, now: float) -> _Prepared:
    """Minimums, ceilings, signatures, and the sessions that must stay paused whatever happens."""
    prep = _Prepared(lo=[], hi=[], hi_reason=[], sig_of=[], forced={}, candidates=[])
    lo_grid: dict[float, int] = {}
    hi_grid: dict[float, int] = {}
    sigs: dict[tuple[str, tuple[int, ...], float], int] = {}
    for i, s in enumerate(sessions):
        lo = lo_grid.get(s.min_a)
        if lo is None:
            lo = lo_grid[s.min_a] = ceil_units(s.min_a, 10)
        hi, reason = _ceiling(s, policy, lo, hi_grid)
        key = (s.zone_id, s.phases, s.voltage_v)
        sig = sigs.get(key)
        if sig is None:
            sig = sigs[key] = _signature(net, s)
        prep.lo.append(lo)
        prep.hi.append(hi)
        prep.hi_reason.append(reason)
        prep.sig_of.append(sig)
        forced = _forced_reason(s, sig, lo, hi, reason, policy, now)
        if forced is None:
            prep.candidates.append(i)
        else:
            prep.forced[i] = forced
    return prep


def _signature(net: Network, s: Session) -> int:
    """The session's constraint class, or -1 when its zone is unknown (it then stays paused)."""
    zone = net.index.get(s.zone_id)
    if zone is None:
        return -1
    return net.signature(zone, s.phases, ceil_units(s.voltage_v, 10))


def _forced_reason(s: Session, sig: int, lo: int, hi: int, reason: str, policy: Policy, now: float) -> str | None:
    """Why a session stays paused whatever the capacity, or None if it may compete for it."""
    if sig < 0:
        return UNKNOWN_ZONE
    if hi < lo:
        return reason  # a charger cannot signal less than the minimum: the ceiling itself pauses it
    if min_off_hold(s, policy, now):
        return MIN_OFF_HOLD
    return None


def _decide_running(
    sessions: Sequence[Session],
    prep: _Prepared,
    net: Network,
    policy: Policy,
    now: float,
    rotate: bool,
) -> tuple[list[int], dict[int, int]]:
    """Who runs. When every candidate's minimum fits, everyone does and no order is needed."""
    need = demand(prep.candidates, prep.lo, prep.sig_of, net.sig_pairs, len(net.cap))
    contested = [n > c for n, c in zip(need, net.cap, strict=True)]
    if not any(contested):
        return prep.candidates, {}
    order = admission_order(sessions, prep.candidates, policy, now, rotate)
    return admit(order, prep.lo, prep.sig_of, restrict(net.sig_pairs, contested), net.cap)


def _share(running: list[int], sessions: Sequence[Session], prep: _Prepared, net: Network, policy: Policy) -> Fill:
    """Water filling: one pass in equal mode; VIPs first (others held at minimum) in priority mode."""
    could_fill = demand(running, prep.hi, prep.sig_of, net.sig_pairs, len(net.cap))
    pairs = restrict(net.sig_pairs, [n > c for n, c in zip(could_fill, net.cap, strict=True)])
    base = demand(running, prep.lo, prep.sig_of, pairs, len(net.cap))
    args = (prep.sig_of, pairs, prep.lo, prep.hi, net.cap, base)
    if policy.mode == "equal":
        return water_fill(running, *args)
    vips = [i for i in running if sessions[i].vip]
    others = [i for i in running if not sessions[i].vip]
    first = water_fill(vips, *args)
    second = water_fill(others, *args, first.full)  # base now holds the VIPs' final currents
    first.value.update(second.value)
    first.binding.update(second.binding)
    return first


def _limits(
    sessions: Sequence[Session],
    prep: _Prepared,
    net: Network,
    fill: Fill,
    blocked: dict[int, int],
    policy: Policy,
    now: float,
) -> dict[str, SessionLimit]:
    """One SessionLimit per session, with the reason for its limit; a tight loop (every session)."""
    out: dict[str, SessionLimit] = {}
    values, stops, hi, hi_reason = fill.value, fill.binding, prep.hi, prep.hi_reason
    labels, cons_zone = net.cons_label, [net.zone_ids[z] for z in net.cons_zone]
    tolerance = policy.overdraw_tolerance_a
    for i, s in enumerate(sessions):
        value = values.get(i)
        if value is None:
            limit_a, paused = 0.0, True
            binding, zone = (SHED, cons_zone[blocked[i]]) if i in blocked else (prep.forced[i], None)
        else:
            limit_a, paused = value / 10, False
            c = stops[i]
            binding, zone = (hi_reason[i], None) if c == OWN_CEILING else (labels[c], cons_zone[c])
        measured = s.measured_a
        reference = limit_a if s.offered_a is None else s.offered_a  # what the car was told
        out[s.id] = SessionLimit(
            limit_a=limit_a,
            paused=paused,
            binding=binding,
            overdraw=measured is not None and measured > reference + tolerance,
            zone_id=zone,
            max_a=hi[i] / 10,
            state_since=now if paused != s.paused else s.state_since,
        )
    return out


def _zone_usage(net: Network, prep: _Prepared, fill: Fill) -> dict[str, ZoneUsage]:
    """Sum limits per signature first, then walk each signature's path once: O(groups x depth)."""
    per_sig: dict[int, list[int]] = {}
    for i, value in fill.value.items():
        acc = per_sig.setdefault(prep.sig_of[i], [0, 0])
        acc[0] += value
        acc[1] += 1
    amps = [[0, 0, 0] for _ in net.zone_ids]
    centiwatts = [0] * len(net.zone_ids)
    running = [0] * len(net.zone_ids)
    for sig, (total, count) in per_sig.items():
        zone, phases, volt_dv = net.sig_info[sig]
        for z in net.paths[zone]:
            for p in phases:
                amps[z][p] += total
            centiwatts[z] += len(phases) * volt_dv * total
            running[z] += count
    return {
        zid: ZoneUsage(used_a=(a[0] / 10, a[1] / 10, a[2] / 10), used_w=cw / 100, running=n)
        for zid, a, cw, n in zip(net.zone_ids, amps, centiwatts, running, strict=True)
    }
