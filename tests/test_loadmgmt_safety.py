"""Safe defaults: each connector's fair share of every zone above it, every A and kW limit honoured."""

from __future__ import annotations

from loadmgmt.capacity import TimeOfUse, ZoneConfig
from loadmgmt.engine import Zone
from loadmgmt.safety import DefaultCharger, safe_default_targets
from loadmgmt.tree import static_capacity


def charger(pk: int, zone: str, *, phases: tuple[int, ...] = (0, 1, 2), connectors: int = 1, max_a: float = 32,
            min_a: float = 6) -> DefaultCharger:
    return DefaultCharger(pk=pk, zone_id=zone, phases=phases, connectors=connectors, max_a=max_a, min_a=min_a)


def test_it_shares_every_level_of_the_tree():
    zones = [Zone(id="root", capacity_a=(63, 63, 63)), Zone(id="sub", parent_id="root", capacity_a=(20, 20, 20))]
    targets = safe_default_targets(zones, [charger(1, "sub"), charger(2, "sub"), charger(3, "root")])
    assert targets == {1: 10.0, 2: 10.0, 3: 32.0}  # max-min fair: the root has room for a full third


def test_a_kw_limit_counts_even_when_the_zone_also_has_an_amp_limit():
    zones = [Zone(id="root", capacity_a=(63, 63, 63), capacity_w=22_000)]
    targets = safe_default_targets(zones, [charger(n, "root") for n in range(4)])
    assert set(targets.values()) == {7.9}  # 22 kW / (4 x 3 x 230 V), not 63 / 4 = 15.7 A
    assert sum(targets.values()) * 3 * 230 <= 22_000


def test_a_dual_socket_charger_counts_once_per_connector():
    zones = [Zone(id="root", capacity_a=(32, 32, 32))]
    targets = safe_default_targets(zones, [charger(1, "root", connectors=2), charger(2, "root")])
    assert targets == {1: 10.6, 2: 10.6}  # three connectors may each draw the default
    assert 2 * targets[1] + targets[2] <= 32


def test_single_phase_chargers_share_their_own_phase():
    zones = [Zone(id="root", capacity_a=(32, 32, 32))]
    targets = safe_default_targets(zones, [charger(1, "root", phases=(1,)), charger(2, "root", phases=(1,)),
                                           charger(3, "root", phases=(2,))])
    assert targets == {1: 16.0, 2: 16.0, 3: 32.0}


def test_a_share_below_the_minimum_current_is_zero_not_a_trip():
    zones = [Zone(id="root", capacity_a=(20, 20, 20))]
    assert set(safe_default_targets(zones, [charger(n, "root") for n in range(5)]).values()) == {0.0}


def test_a_charger_nobody_can_place_gets_nothing():
    zones = [Zone(id="a", capacity_a=(32, 32, 32)), Zone(id="b", capacity_a=(32, 32, 32))]
    assert safe_default_targets(zones, [charger(1, "no zone")]) == {1: 0.0}


def test_the_static_capacity_is_the_lowest_of_breaker_time_of_use_and_fallback():
    import datetime as dt

    peak = TimeOfUse(weekdays=frozenset({0}), start=dt.time(17), end=dt.time(20), limit_percent=50)
    config = ZoneConfig("1", "z", None, max_current_a=100, max_power_w=40_000, dynamic=True, fallback_current_a=60,
                        time_of_use=(peak,))
    zone = static_capacity(config)
    assert zone.capacity_a == (50, 50, 50)  # the peak rule may start while nobody watches
    assert zone.capacity_w == 20_000


def test_the_targets_follow_every_change_of_the_inputs_between_calls():
    """The last answer is kept for the next tick's identical inputs; any change computes afresh."""
    zones = [Zone(id="root", capacity_a=(32, 32, 32))]
    fleet = [charger(1, "root"), charger(2, "root")]
    first = safe_default_targets(zones, fleet)
    assert first == {1: 16.0, 2: 16.0}
    first[1] = 99.0  # a caller's change to its answer is not the next caller's
    assert safe_default_targets(list(zones), list(fleet)) == {1: 16.0, 2: 16.0}
    assert safe_default_targets([Zone(id="root", capacity_a=(20, 32, 32))], fleet) == {1: 10.0, 2: 10.0}
    assert safe_default_targets(zones, [*fleet, charger(3, "root")]) == {1: 10.6, 2: 10.6, 3: 10.6}
    assert safe_default_targets(zones, [charger(1, "root", max_a=10), charger(2, "root")]) == {1: 10.0, 2: 22.0}
    assert safe_default_targets(zones, [charger(1, "root"), charger(2, "root", phases=(1,))]) == {1: 16.0, 2: 16.0}
    assert safe_default_targets(zones, [charger(1, "root", min_a=17), charger(2, "root")]) == {1: 0.0, 2: 16.0}
    assert safe_default_targets(zones, fleet) == {1: 16.0, 2: 16.0}
