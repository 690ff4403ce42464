"""evce.gctune: the collector thresholds of the long-running processes."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from evce import gctune
from evce.env import ConfigError

BASE_DIR = Path(__file__).resolve().parent.parent


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


def test_a_paused_start_collects_again_once_tuned(collector):
    gctune.pause_for_start()
    assert not gc.isenabled()
    assert gc.get_freeze_count() > 1000  # what existed before the start's imports: out of the collection's walk
    gctune.tune((40000, 20, 50))
    assert gc.isenabled() and gc.get_threshold() == (40000, 20, 50)


def test_pythons_own_after_a_paused_start_collects_again(collector):
    gctune.pause_for_start()
    gctune.tune(None)
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_started_web_process_collects_with_the_tuned_thresholds():
    """Importing the ASGI application (what Daphne does) pauses the collector and resumes it."""
    probe = ("import gc, evce.asgi; from django.conf import settings; "
             "print(gc.isenabled(), gc.get_threshold() == settings.GC_THRESHOLDS, gc.get_freeze_count() > 10000)")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "evce.settings", "GC_THRESHOLDS": "40000,20,50"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=BASE_DIR, env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.split() == ["True", "True", "True"]
