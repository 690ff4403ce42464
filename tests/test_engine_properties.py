"""Property-based proofs of the engine's promises over random zone trees and sessions.

Trees go up to 8 levels and 30 zones, with amp limits per phase and kW limits (some missing, some
zero, negative or NaN); sessions mix single- and three-phase, VIPs, measured draws, holds and
unknown zones. Minimums and voltages are multiples of 0.1 so the float oracle here and the
engine's integer grid agree exactly on what "fits".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadmgmt.engine import Allocation, Policy, Session, SessionLimit, Zone, allocate, check_allocation
from loadmgmt.engine.model import MIN_OFF_HOLD, SHED

NOW = 1_700_000_000.0
EPS = 1e-6
PHASE_SETS = [(0, 1, 2), (0,), (1,), (2,), (0, 2)]
PROPERTY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Digits:
    """Reads a big integer as mixed-radix digits, one per field.

    Drawing one integer per zone or session instead of one value per field makes a case about
    ten times cheaper to generate, and Hypothesis still shrinks it: a smaller integer means
    simpler fields (zone 0, three-phase, no measurement...).
    """

    def __init__(self, value: int) -> None:
        self.value = value

    def take(self, radix: int) -> int:
        self.value, digit = divmod(self.value, radix)
        return digit

    def pick(self, options: list):
        return options[self.take(len(options))]

    def amps(self) -> float | None:
        """None, rarely NaN or next to nothing, else a capacity with two decimals (off the 0.1 A grid)."""
        kind = self.take(40)
        if kind < 8:
            return None
        if kind == 8:
            return math.nan
        if kind < 11:
            return (self.take(1_601) - 1_000) / 100  # -10.00 .. 6.00 A: nothing or next to nothing
        return self.take(4_001 if kind < 26 else 16_001) / 100  # tight (<= 40 A) or roomy (<= 160 A)


# Fixed-size random bytes, not st.integers: Hypothesis favours small integers, whose digits would be
# mostly zero (zero capacities everywhere). Bytes shrink towards zero all the same.
ENTITY = st.binary(min_size=16, max_size=16).map(lambda raw: int.from_bytes(raw, "little"))


@st.composite
def zone_trees(draw) -> list[Zone]:
    """Zones z00..zNN, at most 8 levels; parents are picked among the most recent zones first."""
    zones: list[Zone] = []
    depth: list[int] = []
    for i in range(draw(st.integers(1, 30))):
        d = Digits(draw(ENTITY))
        shallow = [j for j in range(i) if depth[j] < 7]
        new_root = i == 0 or d.take(20) == 19
        parent = None if new_root else shallow[-1 - d.take(len(shallow))]
        depth.append(0 if parent is None else depth[parent] + 1)
        amps = None if d.take(5) == 0 else (d.amps(), d.amps(), d.amps())
        watts = None if d.take(3) else (d.take(120_001) - 1_000) * d.pick([1.0, 0.25]) + d.take(100) / 100
        zones.append(
            Zone(
                id=f"z{i:02d}",
                parent_id=None if parent is None else f"z{parent:02d}",
                capacity_a=amps,
                capacity_w=watts,
                name=d.pick(["", f"Zone {i}"]),
            )
        )
    return zones


def decode_session(i: int, d: Digits, zone_ids: list[str]) -> Session:
    zone_id = zone_ids[d.take(len(zone_ids))]
    return Session(
        id=f"s{i:02d}",
        zone_id="ghost" if d.take(40) == 39 else zone_id,
        phases=d.pick(PHASE_SETS),
        min_a=d.pick([6.0, 6.0, 6.0, 8.0, 10.0]),
        max_a=d.pick([32.0, 16.0, 10.0, 6.0, 5.0]) if d.take(3) else d.take(401) / 10,
        charger_max_a=d.pick([None, None, 10.0, 16.0]),
        measured_a=d.take(451) / 10 if d.take(2) else None,
        offered_a=d.take(321) / 10 if d.take(2) else None,
        vip=bool(d.take(2)),
        energy_wh=d.pick([0.0, 1_000.0, 5_000.0]) if d.take(2) else float(d.take(50_001)),
        connected_at=NOW - d.take(36_001),
        paused=bool(d.take(2)),
        state_since=NOW - d.pick([0.0, 60.0, 299.9, 300.0, 3_600.0]),
        voltage_v=d.pick([230.0, 230.0, 220.0, 240.0]),
    )


@st.composite
def sessions_in(draw, zones: list[Zone]) -> list[Session]:
    zone_ids = [z.id for z in zones]
    return [decode_session(i, Digits(draw(ENTITY)), zone_ids) for i in range(draw(st.integers(0, 40)))]


policies = st.builds(
    Policy,
    mode=st.sampled_from(["equal", "priority"]),
    shedding=st.sampled_from(["energy", "connection_time"]),
    min_on_s=st.sampled_from([0.0, 300.0]),
    min_off_s=st.sampled_from([0.0, 300.0]),
    unused_margin_a=st.sampled_from([0.5, 2.0]),
    last_rotation_at=st.sampled_from([None, NOW - 100, NOW - 900]),
)


@st.composite
def cases(draw, mode: str | None = None) -> tuple[list[Zone], list[Session], Policy]:
    zones = draw(zone_trees())
    policy = draw(policies)
    if mode is not None:
        policy = Policy(
            mode=mode,
            shedding=policy.shedding,
            min_on_s=policy.min_on_s,
            min_off_s=policy.min_off_s,
            unused_margin_a=policy.unused_margin_a,
            last_rotation_at=policy.last_rotation_at,
        )
    return zones, draw(sessions_in(zones)), policy


@dataclass(frozen=True)
class Constraint:
    zone_id: str
    phase: int | None  # None: the zone's power limit

    def cap(self, zones: dict[str, Zone]) -> float | None:
        zone = zones[self.zone_id]
        raw = zone.capacity_w if self.phase is None else (zone.capacity_a or (None,) * 3)[self.phase]
        if raw is None or raw == math.inf:
            return None
        return 0.0 if math.isnan(raw) else raw

    def weight(self, s: Session) -> float:
        """What one amp of this session counts for in this constraint (0: not concerned)."""
        if self.phase is None:
            return len(s.phases) * s.voltage_v
        return 1.0 if self.phase in s.phases else 0.0


def path(zone_id: str | None, zones: dict[str, Zone]) -> list[str]:
    result = []
    while zone_id is not None and zone_id in zones:
        result.append(zone_id)
        zone_id = zones[zone_id].parent_id
    return result


def constraints_of(s: Session, zones: dict[str, Zone]) -> list[Constraint]:
    found = [Constraint(z, p) for z in path(s.zone_id, zones) for p in (*s.phases, None)]
    return [c for c in found if c.cap(zones) is not None]


def usage(c: Constraint, sessions: list[Session], amps: dict[str, float], zones: dict[str, Zone]) -> float:
    return sum(c.weight(s) * amps[s.id] for s in sessions if c.zone_id in path(s.zone_id, zones))


def parse_binding(r: SessionLimit) -> Constraint | None:
    """The constraint named by "zone:<label> phase L<n>" / "zone:<label> power" (zone from zone_id)."""
    if not r.binding.startswith("zone:") or r.zone_id is None:
        return None
    return Constraint(r.zone_id, None if r.binding.endswith(" power") else int(r.binding[-1]) - 1)


def run(zones: list[Zone], sessions: list[Session], policy: Policy) -> Allocation:
    return allocate(zones, sessions, policy, NOW)


@PROPERTY
@given(cases())
def test_no_zone_phase_or_kw_limit_is_ever_exceeded_and_minimums_hold(case):
    zones, sessions, policy = case
    result = run(zones, sessions, policy)
    assert check_allocation(zones, sessions, result) == []
    for s in sessions:
        r = result.limits[s.id]
        assert r.paused or s.min_a - EPS <= r.limit_a <= r.max_a + EPS


def tier(s: Session, policy: Policy) -> tuple[int, int, int]:
    """Who may take room from whom: VIPs (priority mode), then sessions inside their minimum
    on-time, then (between rotations) the running ones. Only the shedding policy ranks within a tier."""
    rotating = policy.last_rotation_at is None or NOW - policy.last_rotation_at >= policy.rotation_period_s
    return (
        0 if policy.mode == "priority" and s.vip else 1,
        0 if not s.paused and NOW - s.state_since < policy.min_on_s else 1,
        0 if rotating or not s.paused else 1,
    )


@PROPERTY
@given(cases())
def test_a_shed_session_had_no_room_for_its_minimum_next_to_those_ranking_above_it(case):
    zones, sessions, policy = case
    result = run(zones, sessions, policy)
    by_id = {z.id: z for z in zones}
    for s in sessions:
        r = result.limits[s.id]
        if r.binding != SHED:
            continue
        # Shed only as much as needed: even counting only the running sessions of its tier or
        # better (those that may take precedence: VIPs, held sessions, the already running)...
        ahead = [t for t in sessions if not result.limits[t.id].paused and tier(t, policy) <= tier(s, policy)]
        at_min = {t.id: t.min_a if t in ahead else 0.0 for t in sessions}
        # ...its minimum does not fit somewhere on its path.
        overflows = [
            c
            for c in constraints_of(s, by_id)
            if usage(c, sessions, at_min, by_id) + c.weight(s) * s.min_a > c.cap(by_id) - EPS
        ]
        assert overflows, f"{s.id} was shed but its minimum fits"
        assert r.zone_id in {c.zone_id for c in overflows}


@PROPERTY
@given(cases())
def test_holds_are_kept_unless_capacity_forces(case):
    zones, sessions, policy = case
    result = run(zones, sessions, policy)
    for s in sessions:
        r = result.limits[s.id]
        if s.paused and NOW - s.state_since < policy.min_off_s:
            assert r.paused, "restarted inside its minimum off-time"
        if not s.paused and NOW - s.state_since < policy.min_on_s and r.paused:
            assert r.binding != MIN_OFF_HOLD
            assert r.binding in {SHED, "session max", "charger max", "unknown zone"}
        assert r.state_since == (NOW if r.paused != s.paused else s.state_since)


@PROPERTY
@given(cases(mode="equal"))
def test_equal_mode_is_max_min_fair(case):
    zones, sessions, policy = case
    result = run(zones, sessions, policy)
    by_id = {z.id: z for z in zones}
    amps = {s.id: result.limits[s.id].limit_a for s in sessions}
    running = [s for s in sessions if not result.limits[s.id].paused]
    for s in running:
        r = result.limits[s.id]
        c = parse_binding(r)
        if c is None:
            assert r.limit_a == r.max_a, f"{s.id} stopped below its ceiling without a zone binding"
            continue
        sharing = [t for t in running if c.weight(t) and c.zone_id in path(t.zone_id, by_id)]
        for t in sharing:  # nobody behind the same bottleneck got more, unless held up by its own minimum
            assert amps[t.id] <= r.limit_a + EPS or amps[t.id] <= t.min_a + EPS, (s.id, t.id)
        # Filled up to rounding: less than 0.1 A per session stopped by it (plus the capacity's own
        # rounding to the 0.1 A or 0.01 W grid) is left.
        stopped_here = sum(c.weight(t) for t in sharing if parse_binding(result.limits[t.id]) == c)
        grid = 0.01 if c.phase is None else 0.1
        slack = c.cap(by_id) - usage(c, sessions, amps, by_id)
        assert slack < stopped_here * 0.1 + grid + EPS, f"{s.id} bound by {r.binding} with {slack} left"


@PROPERTY
@given(cases(mode="priority"))
def test_priority_mode_never_leaves_a_vip_worse_off_than_a_non_vip_in_its_zone(case):
    zones, sessions, policy = case
    result = run(zones, sessions, policy)
    for v in (s for s in sessions if s.vip):
        rv = result.limits[v.id]
        if rv.binding == MIN_OFF_HOLD:
            continue
        for n in sessions:
            comparable = (
                not n.vip
                and n.zone_id == v.zone_id
                and n.voltage_v == v.voltage_v
                and set(n.phases) >= set(v.phases)
                and n.min_a >= v.min_a
            )
            if not comparable:
                continue
            rn = result.limits[n.id]
            if rv.paused and rv.binding == SHED:
                assert rn.paused, f"VIP {v.id} shed while {n.id} runs"
            if not rv.paused and not rn.paused and rn.limit_a > n.min_a + EPS:
                assert rv.limit_a >= min(rn.limit_a, rv.max_a) - EPS, (v.id, n.id)


@PROPERTY
@given(cases(mode="priority"))
def test_priority_mode_serves_vips_first(case):
    zones, sessions, policy = case
    result = run(zones, sessions, policy)
    by_id = {z.id: z for z in zones}
    for v in sessions:
        c = parse_binding(result.limits[v.id])
        if not v.vip or c is None:
            continue
        # A VIP held back by a zone: every non-VIP behind the same limit is down to its minimum.
        for n in sessions:
            rn = result.limits[n.id]
            if not n.vip and not rn.paused and c.weight(n) and c.zone_id in path(n.zone_id, by_id):
                assert rn.limit_a <= n.min_a + EPS, (v.id, n.id, rn.limit_a)


@PROPERTY
@given(cases(), st.randoms(use_true_random=False))
def test_the_same_input_gives_the_same_output_in_any_order(case, rnd):
    zones, sessions, policy = case
    first = run(zones, sessions, policy)
    assert run(zones, sessions, policy) == first
    shuffled_zones, shuffled_sessions = list(zones), list(sessions)
    rnd.shuffle(shuffled_zones)
    rnd.shuffle(shuffled_sessions)
    assert run(shuffled_zones, shuffled_sessions, policy) == first
