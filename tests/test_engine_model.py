"""Inputs are checked where they are built: a bad zone tree or session fails loudly at once,
instead of producing an allocation that only looks plausible."""

from __future__ import annotations

import math

import pytest

from loadmgmt.engine import Policy, Session, Zone, allocate

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"phases": ()},
        {"phases": (0, 0)},
        {"phases": (3,)},
        {"min_a": 0.0},
        {"max_a": math.nan},
        {"max_a": -1.0},
        {"voltage_v": 0.0},
        {"charger_max_a": math.inf},
        {"energy_wh": math.nan},
    ],
)
def test_it_rejects_an_impossible_session(kwargs):
    fields = {"id": "s", "zone_id": "z", "max_a": 32.0} | kwargs
    with pytest.raises(ValueError, match="session"):
        Session(**fields)


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "fair"}, {"shedding": "random"}, {"min_on_s": -1.0}, {"rotation_period_s": math.inf}],
)
def test_it_rejects_an_unknown_policy(kwargs):
    with pytest.raises(ValueError):
        Policy(**kwargs)


def test_it_rejects_a_capacity_without_three_phases():
    with pytest.raises(ValueError, match="phase"):
        Zone(id="z", capacity_a=(32.0, 32.0))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("zones", "message"),
    [
        ([Zone(id="a"), Zone(id="a")], "unique"),
        ([Zone(id="a", parent_id="missing")], "unknown parent"),
        ([Zone(id="a", parent_id="b"), Zone(id="b", parent_id="a")], "cycle"),
        (
            [Zone(id="root"), Zone(id="a", parent_id="c"), Zone(id="b", parent_id="a"), Zone(id="c", parent_id="b")],
            "cycle",
        ),
    ],
)
def test_it_rejects_a_broken_zone_tree(zones, message):
    with pytest.raises(ValueError, match=message):
        allocate(zones, [], Policy(), NOW)


def test_it_rejects_duplicate_session_ids():
    sessions = [Session(id="s", zone_id="z", max_a=32.0)] * 2
    with pytest.raises(ValueError, match="unique"):
        allocate([Zone(id="z")], sessions, Policy(), NOW)


def test_it_accepts_several_independent_sites():
    zones = [Zone(id="a", capacity_a=(10.0, 10.0, 10.0)), Zone(id="b", capacity_a=(20.0, 20.0, 20.0))]
    sessions = [Session(id="x", zone_id="a", max_a=32.0), Session(id="y", zone_id="b", max_a=32.0)]
    result = allocate(zones, sessions, Policy(), NOW)
    assert (result.limits["x"].limit_a, result.limits["y"].limit_a) == (10.0, 20.0)


def test_it_handles_no_sessions_and_no_zones():
    result = allocate([], [], Policy(), NOW)
    assert result.limits == {} and result.zones == {}
