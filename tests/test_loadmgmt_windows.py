"""Measurements of different times are never mixed: the EV draw a dynamic zone's meter saw."""

from __future__ import annotations

from loadmgmt.inputs import ev_lower_bound

A = (16.0, 16.0, 16.0)
B = (30.0, 30.0, 30.0)


def test_samples_after_the_meter_reading_are_ignored():
    # The cars ramped up to 30 A after the (lagging) meter took its reading at t=10: the meter
    # still saw 16 A of EV load; subtracting 30 A would under-estimate the building by 14 A.
    timeline = [(5.0, A), (11.0, B)]
    assert ev_lower_bound(timeline, at=10.0, window_s=2.0, limit_cap=None) == A


def test_the_lowest_draw_inside_the_window_is_taken():
    timeline = [(5.0, B), (9.0, A)]  # the reading at t=10 may reflect t=8 (30 A) or t=9.5 (16 A)
    assert ev_lower_bound(timeline, at=10.0, window_s=2.0, limit_cap=None) == A


def test_a_session_with_no_sample_before_the_window_counts_zero():
    assert ev_lower_bound([(9.5, B)], at=10.0, window_s=2.0, limit_cap=None) == (0.0, 0.0, 0.0)
    assert ev_lower_bound([], at=10.0, window_s=2.0, limit_cap=None) == (0.0, 0.0, 0.0)


def test_a_lower_limit_in_force_caps_the_bound():
    assert ev_lower_bound([(5.0, B)], at=10.0, window_s=2.0, limit_cap=10.0) == (10.0, 10.0, 10.0)


def test_a_single_phase_chargers_current_goes_on_its_supply_phase_whatever_label_it_reports():
    from loadmgmt.inputs import _per_supply_phase

    # Wired to L2, the charger reports its (only) current as its own "L1".
    assert _per_supply_phase({"L1": 13.0}, (1,)) == (0.0, 13.0, 0.0)
    assert _per_supply_phase({"": 13.0}, (2,)) == (0.0, 0.0, 13.0)
    assert _per_supply_phase({"L1": 10.0, "L2": 11.0, "L3": 12.0}, (0, 1, 2)) == (10.0, 11.0, 12.0)


def test_an_ev_submeter_stands_for_its_whole_subtree_so_ev_load_is_counted_once():
    from loadmgmt.tree import subtree_sums

    parents = {"site": None, "feeder": "site", "row": "feeder"}
    chargers = {"row": (20.0, 20.0, 20.0)}  # the chargers' own readings in the child zone
    submeter = {"feeder": (22.0, 21.0, 20.0)}  # an EV sub-meter on the feeder measures the same cars
    sums = subtree_sums(parents, chargers, submeter)
    assert sums["feeder"] == (22.0, 21.0, 20.0)  # not 42 A
    assert sums["site"] == (22.0, 21.0, 20.0)
    assert sums["row"] == (20.0, 20.0, 20.0)


def test_a_pause_the_charger_rejected_is_not_a_pause():
    from loadmgmt.inputs import _paused
    from loadmgmt.models import LimitState

    rejected = LimitState(in_force_a=16.0, in_force_paused=False, wanted_paused=True)  # the pause was refused
    assert _paused(rejected) is False  # the car still charges: no min-off hold for it
    assert _paused(LimitState(in_force_a=0.0, in_force_paused=True, wanted_paused=True)) is True
    assert _paused(LimitState(in_force_a=None, wanted_paused=True)) is True  # nothing confirmed yet: the decision
    assert _paused(None) is False
