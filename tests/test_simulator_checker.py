"""The invariant checker: it must catch a zone over capacity, and only that."""

from __future__ import annotations

import pytest

from simulator.checker import Holding, InvariantChecker, Zone

TREE = [
    Zone("root", capacity_a=63),
    Zone("level-1", parent="root", capacity_a=40),
    Zone("level-2", parent="root", capacity_a=40, capacity_kw=20),
    Zone("dyn", parent="root", capacity_a=50, dynamic=True),
]
THREE = (0, 1, 2)


def hold(cp_id: str, zone: str, limit_a: float, phases=THREE, tx: int | None = None) -> Holding:
    return Holding.of(cp_id, 1, zone, limit_a, phases, tx)


def test_it_stays_clean_within_limits():
    checker = InvariantChecker(TREE)
    for t in range(10):
        checker.observe(t * 0.05, [hold("A", "level-1", 20), hold("B", "level-1", 20), hold("C", "level-2", 16)])
    checker.assert_clean()
    assert checker.report().samples == 10


def test_it_detects_a_zone_over_capacity_with_its_integral_and_holders():
    checker = InvariantChecker(TREE)
    checker.observe(0.0, [hold("A", "level-1", 20), hold("B", "level-1", 20)])
    for t in (1.0, 2.0, 3.0):
        checker.observe(t, [hold("A", "level-1", 32), hold("B", "level-1", 20)])
    checker.observe(4.0, [hold("A", "level-1", 20), hold("B", "level-1", 20)])

    with pytest.raises(AssertionError, match="zone level-1 L1: over by up to 12.00 A"):
        checker.assert_clean()
    breaches = [b for b in checker.breaches if b.zone_id == "level-1"]
    assert [b.quantity for b in breaches] == ["L1", "L2", "L3"]
    first = breaches[0]
    assert (first.start_s, first.end_s, first.duration_s) == (1.0, 4.0, 3.0)
    assert first.integral == pytest.approx(24.0)  # 12 A over, sampled at 2.0 and 3.0 s after opening
    assert first.holders_at_worst[0] == ("A", 1, 32)
    assert checker.report().zones["level-1"].breaches == 3


def test_it_sums_a_whole_subtree_against_the_parent():
    checker = InvariantChecker(TREE)
    checker.observe(0.0, [hold("A", "level-1", 36), hold("B", "level-2", 28)])
    assert {b.zone_id for b in checker.breaches} == {"root"}


def test_it_accounts_single_phase_chargers_on_their_supply_phase():
    checker = InvariantChecker(TREE)
    checker.observe(0.0, [hold(f"S{n}", "level-1", 16, phases=(1,)) for n in range(3)])
    assert [(b.zone_id, b.quantity) for b in checker.breaches] == [("level-1", "L2")]


def test_it_checks_the_power_cap():
    checker = InvariantChecker(TREE)
    checker.observe(0.0, [hold("A", "level-2", 16), hold("B", "level-2", 16)])  # 2 × 11.04 kW
    assert [(b.zone_id, b.quantity) for b in checker.breaches] == [("level-2", "kW")]


def test_it_leaves_a_new_session_out_until_its_first_tx_profile_or_the_grace_ends():
    checker = InvariantChecker(TREE, new_session_grace_s=2.0)
    checker.transaction_started("A", 1, 7, at_s=0.0)
    situation = [hold("A", "level-1", 32, tx=7), hold("B", "level-1", 20)]
    checker.observe(1.0, situation)
    checker.assert_clean()
    checker.observe(2.5, situation)  # grace over, still no TxProfile: a breach
    assert checker.breaches


def test_it_ends_the_grace_when_the_tx_profile_is_answered():
    checker = InvariantChecker(TREE, new_session_grace_s=2.0)
    checker.transaction_started("A", 1, 7, at_s=0.0)
    checker.tx_profile_answered("A", 1, 7, "Accepted", at_s=0.4)
    checker.observe(1.0, [hold("A", "level-1", 32, tx=7), hold("B", "level-1", 20)])
    assert checker.breaches
    assert checker.report().tx_profile_latency_s == [pytest.approx(0.4)]


def test_it_gives_the_controller_time_to_react_to_a_building_load_step():
    checker = InvariantChecker(TREE, reaction_grace_s=3.0)
    chargers = [hold("A", "dyn", 20), hold("B", "dyn", 20)]
    checker.observe(0.0, chargers, {"dyn": (5.0, 5.0, 5.0)})
    checker.observe(1.0, chargers, {"dyn": (20.0, 20.0, 20.0)})  # capacity 45 → 30 A: 10 A over
    checker.observe(3.5, chargers, {"dyn": (20.0, 20.0, 20.0)})
    checker.assert_clean()
    assert checker.report().tolerated_samples == 6
    checker.observe(4.5, chargers, {"dyn": (20.0, 20.0, 20.0)})  # too slow
    assert {b.zone_id for b in checker.breaches} == {"dyn"}


def test_it_gives_the_same_grace_after_a_time_of_use_drop():
    checker = InvariantChecker(TREE, reaction_grace_s=3.0)
    chargers = [hold("A", "level-1", 20), hold("B", "level-1", 20)]
    checker.observe(0.0, chargers)
    checker.set_capacity("level-1", capacity_a=30)
    checker.observe(1.0, chargers)
    checker.assert_clean()
    checker.observe(5.0, chargers)
    assert checker.breaches


def test_it_refuses_an_unknown_parent():
    with pytest.raises(ValueError, match="unknown parent"):
        InvariantChecker([Zone("a", parent="nowhere")])
