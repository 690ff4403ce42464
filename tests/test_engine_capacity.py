"""Promise 1: no zone, at any level, on any phase or in kW, is ever given more than it has."""

from __future__ import annotations

import math

import pytest

from loadmgmt.engine import Policy, Session, Zone, allocate, check_allocation

NOW = 1_700_000_000.0
POLICY = Policy(last_rotation_at=NOW)


def zone(zid: str, amps: float | None, parent: str | None = None, **kwargs) -> Zone:
    return Zone(id=zid, parent_id=parent, capacity_a=None if amps is None else (amps, amps, amps), **kwargs)


def car(sid: str, zone_id: str = "site", **kwargs) -> Session:
    kwargs.setdefault("max_a", 32.0)
    return Session(id=sid, zone_id=zone_id, **kwargs)


def limits(zones: list[Zone], sessions: list[Session], policy: Policy = POLICY) -> dict[str, float]:
    result = allocate(zones, sessions, policy, NOW)
    assert check_allocation(zones, sessions, result) == []
    return {sid: r.limit_a for sid, r in result.limits.items()}


def test_it_shares_a_63a_root_between_four_32a_chargers_rounding_down():
    zones = [zone("site", 63.0, name="Site")]
    sessions = [car(f"c{i}") for i in range(4)]
    result = allocate(zones, sessions, POLICY, NOW)
    assert {r.limit_a for r in result.limits.values()} == {15.7}  # 63 / 4 = 15.75, rounded down
    assert result.limits["c0"].binding == "zone:Site phase L1"
    assert result.limits["c0"].zone_id == "site"
    assert result.zones["site"].used_a == (62.8, 62.8, 62.8)


def test_it_gives_each_car_its_max_when_capacity_is_ample():
    assert limits([zone("site", 200.0)], [car("a"), car("b", max_a=16.0)]) == {"a": 32.0, "b": 16.0}


def test_it_treats_a_zone_without_limits_as_unlimited():
    assert limits([zone("site", None)], [car("a")]) == {"a": 32.0}


def test_it_respects_a_kw_limit():
    zones = [Zone(id="site", capacity_w=22_000.0, name="Site")]
    result = allocate(zones, [car("a"), car("b")], POLICY, NOW)
    # 22 kW / (2 cars x 3 phases x 230 V) = 15.94 A
    assert [r.limit_a for r in result.limits.values()] == [15.9, 15.9]
    assert result.limits["a"].binding == "zone:Site power"
    assert result.zones["site"].used_w == pytest.approx(2 * 3 * 230 * 15.9)


def test_it_applies_the_tighter_of_amps_and_kw():
    zones = [Zone(id="site", capacity_a=(40.0, 40.0, 40.0), capacity_w=11_040.0)]  # 11.04 kW = 16 A x 3 x 230 V
    assert limits(zones, [car("a")]) == {"a": 16.0}


def test_it_counts_power_of_single_phase_chargers_on_one_phase_only():
    zones = [Zone(id="site", capacity_w=7_360.0)]  # 32 A x 230 V
    assert limits(zones, [car("a", phases=(0,))]) == {"a": 32.0}


def test_it_gives_single_phase_chargers_on_different_phases_32a_each():
    zones = [zone("site", 32.0)]
    sessions = [car("l1", phases=(0,)), car("l2", phases=(1,)), car("l3", phases=(2,))]
    assert limits(zones, sessions) == {"l1": 32.0, "l2": 32.0, "l3": 32.0}


def test_it_limits_only_the_phase_that_has_a_limit():
    zones = [Zone(id="site", capacity_a=(32.0, None, None))]
    sessions = [car("l1a", phases=(0,)), car("l1b", phases=(0,)), car("l2", phases=(1,))]
    assert limits(zones, sessions) == {"l1a": 16.0, "l1b": 16.0, "l2": 32.0}


def test_it_lets_a_three_phase_car_use_only_what_its_busiest_phase_allows():
    zones = [Zone(id="site", capacity_a=(20.0, 40.0, 40.0))]
    sessions = [car("three"), car("l2", phases=(1,))]
    assert limits(zones, sessions) == {"three": 20.0, "l2": 20.0}


def test_it_applies_a_child_zone_tighter_than_its_parent():
    zones = [zone("site", 100.0), zone("level-2", 20.0, parent="site", name="Level-2")]
    sessions = [car("a", "level-2"), car("b", "level-2"), car("c"), car("d")]
    result = allocate(zones, sessions, POLICY, NOW)
    assert {s: r.limit_a for s, r in result.limits.items()} == {"a": 10.0, "b": 10.0, "c": 32.0, "d": 32.0}
    assert result.limits["a"].binding == "zone:Level-2 phase L1"
    assert result.zones["site"].used_a == (84.0, 84.0, 84.0)


def test_it_applies_a_parent_tighter_than_the_sum_of_its_children():
    zones = [zone("site", 40.0), zone("a", 32.0, parent="site"), zone("b", 32.0, parent="site")]
    sessions = [car("a1", "a"), car("a2", "a"), car("b1", "b"), car("b2", "b")]
    assert limits(zones, sessions) == {"a1": 10.0, "a2": 10.0, "b1": 10.0, "b2": 10.0}


def test_it_respects_every_level_of_a_deep_tree():
    zones = [zone("site", 200.0)] + [
        zone(f"z{d}", 200.0 - 20 * d, parent="site" if d == 1 else f"z{d - 1}") for d in range(1, 8)
    ]
    sessions = [car(f"s{d}", f"z{d}") for d in range(1, 8)] + [car("deep2", "z7")]
    result = limits(zones, sessions)
    assert result["s7"] + result["deep2"] <= 60.0
    assert sum(result.values()) <= 200.0


@pytest.mark.parametrize("capacity", [0.0, -12.5, 5.9, math.nan, -math.inf])
def test_it_pauses_everything_where_nothing_or_too_little_is_available(capacity):
    zones = [zone("site", 100.0), zone("full", capacity, parent="site", name="Full")]
    sessions = [car("a", "full"), car("b", "full", phases=(2,)), car("elsewhere")]
    result = allocate(zones, sessions, POLICY, NOW)
    assert result.limits["a"].paused and result.limits["a"].limit_a == 0.0
    assert result.limits["b"].paused
    assert (result.limits["a"].binding, result.limits["a"].zone_id) == ("shed", "full")
    assert result.limits["elsewhere"].limit_a == 32.0
    assert check_allocation(zones, sessions, result) == []


def test_it_pauses_everything_under_a_zero_kw_limit():
    zones = [Zone(id="site", capacity_w=0.0)]
    assert limits(zones, [car("a"), car("b", phases=(1,))]) == {"a": 0.0, "b": 0.0}


def test_it_raises_limits_when_pv_adds_capacity():
    sessions = [car("a"), car("b"), car("c")]
    without_pv = limits([zone("site", 40.0)], sessions)
    with_pv = limits([zone("site", 40.0 + 14.5)], sessions)  # caller adds PV production to the capacity
    assert all(with_pv[s] > without_pv[s] for s in without_pv)
    assert with_pv == {"a": 18.1, "b": 18.1, "c": 18.1}


def test_it_lowers_limits_when_time_of_use_lowers_capacity():
    sessions = [car("a"), car("b")]
    off_peak = limits([zone("site", 63.0)], sessions)
    peak = limits([zone("site", 25.0)], sessions)  # caller applies the peak-hour table
    assert off_peak == {"a": 31.5, "b": 31.5}
    assert peak == {"a": 12.5, "b": 12.5}


def test_it_uses_a_capacity_given_with_one_decimal_exactly():
    # 15.7 is not exact in binary; it must still allow 15.7 A, not 15.6 A.
    assert limits([zone("site", 15.7)], [car("a")]) == {"a": 15.7}


def test_it_reports_usage_for_every_zone():
    zones = [zone("site", 100.0), zone("a", 50.0, parent="site"), zone("idle", 50.0, parent="site")]
    sessions = [car("one", "a", max_a=10.0), car("two", "a", phases=(1,), max_a=16.0)]
    usage = allocate(zones, sessions, POLICY, NOW).zones
    assert usage["a"].used_a == (10.0, 26.0, 10.0)
    assert usage["site"].used_a == (10.0, 26.0, 10.0)
    assert usage["site"].used_w == pytest.approx(3 * 230 * 10 + 230 * 16)
    assert usage["site"].running == 2
    assert usage["idle"].used_a == (0.0, 0.0, 0.0)
