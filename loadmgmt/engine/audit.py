"""An independent check of an Allocation against the promises that keep breakers closed.

It recomputes everything from the public inputs in plain floats, sharing no code with the
integer core, so it can catch a bug there: the control loop can run it before sending profiles
(defence in depth) and the tests use it as their oracle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .model import Allocation, Session, Zone

TOLERANCE = 1e-6  # float summation noise only; the engine itself works on an exact integer grid


def check_allocation(zones: Sequence[Zone], sessions: Sequence[Session], allocation: Allocation) -> list[str]:
    """Return a description of every broken promise (empty when the allocation is safe)."""
    problems = [f"session {s.id!r}: {p}" for s in sessions for p in _session_problems(s, allocation)]
    by_zone = {z.id: z for z in zones}
    amps: dict[str, list[float]] = {z.id: [0.0, 0.0, 0.0] for z in zones}
    watts: dict[str, float] = dict.fromkeys(by_zone, 0.0)
    for s in sessions:
        limit = allocation.limits[s.id].limit_a
        for zid in _path(s.zone_id, by_zone):
            for p in s.phases:
                amps[zid][p] += limit
            watts[zid] += len(s.phases) * s.voltage_v * limit
    for zone in zones:
        problems.extend(_zone_problems(zone, amps[zone.id], watts[zone.id]))
    return problems


def _path(zone_id: str | None, by_zone: dict[str, Zone]) -> list[str]:
    """Zones from a session's zone up to the root (stops on an unknown id or a cycle)."""
    path: list[str] = []
    while zone_id is not None and zone_id in by_zone and zone_id not in path:
        path.append(zone_id)
        zone_id = by_zone[zone_id].parent_id
    return path


def _session_problems(s: Session, allocation: Allocation) -> list[str]:
    """A limit a charger can signal: on the 0.1 A grid, 0 or between the minimum and the max."""
    result = allocation.limits.get(s.id)
    if result is None:
        return ["no limit"]
    limit = result.limit_a
    problems = []
    if abs(limit * 10 - round(limit * 10)) > TOLERANCE:
        problems.append(f"limit {limit} is not a multiple of 0.1 A")
    if result.paused != (limit == 0):
        problems.append(f"paused={result.paused} with limit {limit}")
    if not result.paused and limit < s.min_a - TOLERANCE:
        problems.append(f"limit {limit} below minimum {s.min_a}")
    ceiling = min(s.max_a, math.inf if s.charger_max_a is None else s.charger_max_a)
    if limit > ceiling + TOLERANCE:
        problems.append(f"limit {limit} above max {ceiling}")
    return problems


def _zone_problems(zone: Zone, amps: list[float], watts: float) -> list[str]:
    """Every limited phase and the power limit of one zone, against its subtree's sum."""
    problems = []
    for phase, cap in enumerate(zone.capacity_a or (None, None, None)):
        if cap is not None and amps[phase] > _safe(cap) + TOLERANCE:
            problems.append(f"zone {zone.id!r} phase L{phase + 1}: {amps[phase]:.1f} A > {cap} A")
    if zone.capacity_w is not None and watts > _safe(zone.capacity_w) + TOLERANCE:
        problems.append(f"zone {zone.id!r}: {watts:.1f} W > {zone.capacity_w} W")
    return problems


def _safe(capacity: float) -> float:
    """NaN means unknown, treated as nothing available; below zero (the building alone already
    exceeds the limit) the best the EVs can do is draw nothing, which is what is checked."""
    return 0.0 if math.isnan(capacity) else max(capacity, 0.0)
