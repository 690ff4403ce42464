"""evce.gctune: the collector thresholds of the long-running processes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from evce import gctune
from evce.env import ConfigError


def test_thresholds_are_three_positive_integers_or_pythons_own():
    assert gctune.parse_thresholds("50000,50,100") == (50000, 50, 100)
    assert gctune.parse_thresholds(" 700, 10 ,10 ") == (700, 10, 10)
    assert gctune.parse_thresholds("Python") is None
    for bad in ("", "50000,50", "1,2,3,4", "a,b,c", "0,10,10", "-1,10,10"):
        with pytest.raises(ConfigError, match="GC_THRESHOLDS"):
            gctune.parse_thresholds(bad)


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tuning_sets_the_thresholds_and_freezes_what_exists(collector):
    gctune.tune((40000, 20, 50))
    assert gc.get_threshold() == (40000, 20, 50)
    assert gc.get_freeze_count() > 1000  # the interpreter, Django and the apps


def test_pythons_own_leaves_the_collector_alone(collector):
    before = gc.get_threshold()
    gctune.tune(None)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
