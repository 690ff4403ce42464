"""Promise 3: equal mode shares a bottleneck equally (max-min fair water filling); priority mode
serves VIPs first and shares the rest."""

from __future__ import annotations

from loadmgmt.engine import Allocation, Policy, Session, Zone, allocate, check_allocation

NOW = 1_700_000_000.0


def zone(zid: str, amps: float, parent: str | None = None) -> Zone:
    return Zone(id=zid, parent_id=parent, capacity_a=(amps, amps, amps), name=zid.title())


def car(sid: str, zone_id: str = "site", **kwargs) -> Session:
    kwargs.setdefault("max_a", 32.0)
    return Session(id=sid, zone_id=zone_id, **kwargs)


def run(zones: list[Zone], sessions: list[Session], mode: str = "equal") -> Allocation:
    result = allocate(zones, sessions, Policy(mode=mode, last_rotation_at=NOW), NOW)
    assert check_allocation(zones, sessions, result) == []
    return result


def amps(result: Allocation) -> dict[str, float]:
    return {sid: r.limit_a for sid, r in result.limits.items()}


def test_equal_mode_reduces_everyone_by_the_same_percentage():
    result = amps(run([zone("site", 60.0)], [car("a"), car("b"), car("c")]))
    assert result == {"a": 20.0, "b": 20.0, "c": 20.0}  # each at 62.5 % of 32 A


def test_equal_mode_gives_a_car_that_wants_less_its_max_and_shares_the_rest():
    result = run([zone("site", 50.0)], [car("small", max_a=10.0), car("a"), car("b")])
    assert amps(result) == {"small": 10.0, "a": 20.0, "b": 20.0}
    assert result.limits["small"].binding == "session max"
    assert result.limits["a"].binding == "zone:Site phase L1"


def test_equal_mode_shares_each_bottleneck_among_the_sessions_behind_it():
    zones = [zone("site", 60.0), zone("garage", 16.0, parent="site")]
    sessions = [car("g1", "garage"), car("g2", "garage"), car("s1"), car("s2")]
    result = run(zones, sessions)
    assert amps(result) == {"g1": 8.0, "g2": 8.0, "s1": 22.0, "s2": 22.0}
    assert result.limits["g1"].binding == "zone:Garage phase L1"
    assert result.limits["s1"].binding == "zone:Site phase L1"


def test_equal_mode_names_the_charger_when_its_rating_binds():
    result = run([zone("site", 100.0)], [car("a", charger_max_a=16.0)])
    assert (result.limits["a"].limit_a, result.limits["a"].binding) == (16.0, "charger max")
    assert result.limits["a"].max_a == 16.0


def test_equal_mode_keeps_a_session_with_a_higher_minimum_at_that_minimum():
    result = amps(run([zone("site", 24.0)], [car("a"), car("b"), car("picky", min_a=10.0)]))
    assert result == {"a": 7.0, "b": 7.0, "picky": 10.0}


def test_equal_mode_treats_vips_like_everyone_else():
    assert amps(run([zone("site", 60.0)], [car("vip", vip=True), car("a"), car("b")])) == {
        "vip": 20.0,
        "a": 20.0,
        "b": 20.0,
    }


def test_priority_mode_fills_the_vip_first_up_to_its_max():
    result = amps(run([zone("site", 60.0)], [car("vip", vip=True), car("a"), car("b")], mode="priority"))
    assert result == {"vip": 32.0, "a": 14.0, "b": 14.0}


def test_priority_mode_keeps_the_others_at_their_minimum_when_the_vip_needs_it():
    result = run([zone("site", 40.0)], [car("vip", vip=True), car("a"), car("b")], mode="priority")
    assert amps(result) == {"vip": 28.0, "a": 6.0, "b": 6.0}
    assert result.limits["vip"].binding == "zone:Site phase L1"
    assert result.limits["a"].binding == "zone:Site phase L1"


def test_priority_mode_shares_equally_among_vips():
    sessions = [car("v1", vip=True), car("v2", vip=True), car("a")]
    assert amps(run([zone("site", 50.0)], sessions, mode="priority")) == {"v1": 22.0, "v2": 22.0, "a": 6.0}


def test_priority_mode_gives_vip_headroom_left_in_their_own_zone_only():
    zones = [zone("site", 60.0), zone("vip-bay", 10.0, parent="site")]
    sessions = [car("vip", "vip-bay", vip=True), car("a"), car("b")]
    assert amps(run(zones, sessions, mode="priority")) == {"vip": 10.0, "a": 25.0, "b": 25.0}
