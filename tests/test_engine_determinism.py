"""Promise 6 and rounding: the same input gives the same output, whatever the input order, and
limits are rounded down to 0.1 A so rounding can never push a zone over its capacity."""

from __future__ import annotations

from loadmgmt.engine import Policy, Session, Zone, allocate, check_allocation

NOW = 1_700_000_000.0
POLICY = Policy(last_rotation_at=NOW)


def mixed_site() -> tuple[list[Zone], list[Session]]:
    zones = [
        Zone(id="site", capacity_a=(80.0, 75.0, 80.0), capacity_w=50_000.0),
        Zone(id="north", parent_id="site", capacity_a=(33.3, 33.3, 33.3)),
        Zone(id="south", parent_id="site", capacity_a=(40.0, 40.0, 40.0)),
    ]
    sessions = [
        Session(id="n1", zone_id="north", max_a=32.0, energy_wh=4_000.0),
        Session(id="n2", zone_id="north", max_a=32.0, phases=(1,), energy_wh=4_000.0),
        Session(id="n3", zone_id="north", max_a=16.0, vip=True),
        Session(id="s1", zone_id="south", max_a=32.0, measured_a=8.0, offered_a=20.0),
        Session(id="s2", zone_id="south", max_a=32.0, phases=(2,), paused=True),
        Session(id="r1", zone_id="site", max_a=32.0, energy_wh=10_000.0),
    ]
    return zones, sessions


def test_it_returns_the_same_result_for_the_same_input():
    zones, sessions = mixed_site()
    assert allocate(zones, sessions, POLICY, NOW) == allocate(zones, sessions, POLICY, NOW)


def test_it_does_not_depend_on_the_order_of_zones_or_sessions():
    zones, sessions = mixed_site()
    for mode in ("equal", "priority"):
        policy = Policy(mode=mode, last_rotation_at=NOW)
        forward = allocate(zones, sessions, policy, NOW)
        backward = allocate(zones[::-1], sessions[::-1], policy, NOW)
        assert forward == backward


def test_it_breaks_ties_by_session_id():
    zones = [Zone(id="site", capacity_a=(6.0, 6.0, 6.0))]
    twins = [Session(id="b", zone_id="site", max_a=32.0), Session(id="a", zone_id="site", max_a=32.0)]
    for order in (twins, twins[::-1]):
        result = allocate(zones, order, POLICY, NOW)
        assert not result.limits["a"].paused
        assert result.limits["b"].paused


def test_it_rounds_limits_down_to_one_decimal():
    zones = [Zone(id="site", capacity_a=(50.0, 50.0, 50.0))]
    sessions = [Session(id=c, zone_id="site", max_a=32.0) for c in "abc"]
    assert {r.limit_a for r in allocate(zones, sessions, POLICY, NOW).limits.values()} == {16.6}


def test_it_rounds_a_kw_share_down_too():
    zones = [Zone(id="site", capacity_w=10_000.0)]  # 10 kW / 690 W per A = 14.49 A
    result = allocate(zones, [Session(id="a", zone_id="site", max_a=32.0)], POLICY, NOW)
    assert result.limits["a"].limit_a == 14.4


def test_rounding_never_pushes_a_zone_over_capacity():
    zones = [Zone(id="site", capacity_a=(100.0, 99.9, 100.05), capacity_w=68_999.99)]
    sessions = [
        Session(id=f"s{i:02d}", zone_id="site", max_a=32.0, phases=((0, 1, 2), (0,), (1,), (2,))[i % 4])
        for i in range(14)
    ]
    result = allocate(zones, sessions, POLICY, NOW)
    assert check_allocation(zones, sessions, result) == []
    used = result.zones["site"].used_a
    assert used[0] <= 100.0 and used[1] <= 99.9 and used[2] <= 100.05
