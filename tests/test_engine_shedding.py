"""Promise 2: a running session gets at least its minimum; shedding picks who pauses, and only
as many as needed."""

from __future__ import annotations

from loadmgmt.engine import Allocation, Policy, Session, Zone, allocate, check_allocation

NOW = 1_700_000_000.0
LONG_AGO = NOW - 86_400


def site(l1: float, l2: float | None = None, l3: float | None = None) -> list[Zone]:
    l2 = l1 if l2 is None else l2
    l3 = l1 if l3 is None else l3
    return [Zone(id="site", capacity_a=(l1, l2, l3), name="Site")]


def car(sid: str, **kwargs) -> Session:
    kwargs.setdefault("max_a", 32.0)
    kwargs.setdefault("state_since", LONG_AGO)
    return Session(id=sid, zone_id=kwargs.pop("zone_id", "site"), **kwargs)


def run(zones: list[Zone], sessions: list[Session], **policy) -> Allocation:
    policy.setdefault("last_rotation_at", NOW)
    result = allocate(zones, sessions, Policy(**policy), NOW)
    assert check_allocation(zones, sessions, result) == []
    return result


def paused(result: Allocation) -> set[str]:
    return {sid for sid, r in result.limits.items() if r.paused}


def test_it_pauses_rather_than_going_below_the_minimum():
    result = run(site(16.0), [car("a"), car("b"), car("c", energy_wh=100.0)])
    assert paused(result) == {"c"}
    assert result.limits["a"].limit_a == 8.0
    assert result.limits["c"].binding == "shed"
    assert result.limits["c"].zone_id == "site"


def test_it_keeps_everyone_at_the_minimum_when_that_just_fits():
    result = run(site(18.0), [car("a"), car("b"), car("c")])
    assert paused(result) == set()
    assert {r.limit_a for r in result.limits.values()} == {6.0}


def test_it_respects_a_minimum_above_six_amps():
    result = run(site(15.0), [car("a", min_a=8.0), car("b", min_a=8.0, energy_wh=1.0)])
    assert paused(result) == {"b"}
    assert result.limits["a"].limit_a == 15.0


def test_energy_policy_pauses_those_that_received_the_most_energy():
    sessions = [car("full", energy_wh=30_000.0), car("half", energy_wh=15_000.0), car("new", energy_wh=500.0)]
    result = run(site(13.0), sessions, shedding="energy")
    assert paused(result) == {"full"}


def test_connection_time_policy_pauses_the_longest_connected():
    sessions = [
        car("oldest", connected_at=NOW - 9_000, energy_wh=0.0),
        car("older", connected_at=NOW - 5_000, energy_wh=0.0),
        car("recent", connected_at=NOW - 600, energy_wh=90_000.0),
    ]
    result = run(site(13.0), sessions, shedding="connection_time")
    assert paused(result) == {"oldest"}


def test_priority_mode_sheds_vips_last():
    sessions = [car("vip", vip=True, energy_wh=50_000.0), car("a", energy_wh=100.0), car("b", energy_wh=200.0)]
    assert paused(run(site(12.0), sessions, mode="priority")) == {"b"}
    assert paused(run(site(6.0), sessions, mode="priority")) == {"a", "b"}


def test_equal_mode_ignores_the_vip_flag_when_shedding():
    sessions = [car("vip", vip=True, energy_wh=50_000.0), car("a", energy_wh=100.0)]
    assert paused(run(site(6.0), sessions, mode="equal")) == {"vip"}


def test_it_readmits_a_worse_ranked_session_that_fits_on_a_free_phase():
    sessions = [
        car("a", energy_wh=1.0),
        car("b", energy_wh=2.0),
        car("c", energy_wh=3.0),  # three-phase: no room on L1
        car("d", energy_wh=4.0, phases=(1,)),  # worst ranked, but L2 has room for its 6 A
    ]
    result = run(site(12.0, 18.0, 12.0), sessions)
    assert paused(result) == {"c"}
    assert result.limits["d"].limit_a == 6.0


def test_it_sheds_per_zone_not_site_wide():
    zones = [*site(100.0), Zone(id="small", parent_id="site", capacity_a=(6.0, 6.0, 6.0))]
    sessions = [car("in-small", zone_id="small"), car("in-small-2", zone_id="small", energy_wh=9.0), car("big")]
    result = run(zones, sessions)
    assert paused(result) == {"in-small-2"}
    assert result.limits["in-small-2"].zone_id == "small"
    assert result.limits["big"].limit_a == 32.0


def test_it_pauses_a_session_whose_max_is_below_the_minimum():
    result = run(site(100.0), [car("a", max_a=4.0), car("b", charger_max_a=5.0)])
    assert paused(result) == {"a", "b"}
    assert result.limits["a"].binding == "session max"
    assert result.limits["b"].binding == "charger max"


def test_it_pauses_a_session_in_an_unknown_zone():
    result = run(site(100.0), [car("lost", zone_id="gone")])
    assert result.limits["lost"].paused
    assert result.limits["lost"].binding == "unknown zone"


def test_it_sheds_on_a_kw_limit_counting_each_session_phases():
    zones = [Zone(id="site", capacity_w=3 * 230 * 6.0 + 230 * 6.0)]
    sessions = [car("three", energy_wh=1.0), car("one", phases=(0,), energy_wh=2.0), car("two", energy_wh=3.0)]
    assert paused(run(zones, sessions)) == {"two"}


def test_connection_time_shedding_rotates_because_paused_time_does_not_count():
    # "first" has been connected longest and was paused; "second" kept charging meanwhile. At the
    # rotation it is "second" that has charged longer: it pauses, "first" gets its turn.
    sessions = [
        car("first", connected_at=NOW - 9_000, charged_s=600.0, paused=True, state_since=NOW - 900),
        car("second", connected_at=NOW - 5_000, charged_s=4_000.0),
    ]
    result = allocate([Zone(id="site", capacity_a=(10.0, 10.0, 10.0))], sessions,
                      Policy(shedding="connection_time", min_on_s=0, min_off_s=0, last_rotation_at=NOW - 901), NOW)
    assert {sid for sid, limit in result.limits.items() if limit.paused} == {"second"}
