"""Garbage-collector settings for the long-running processes (web, Celery worker and beat).

A web process holding 2,500 chargers' websockets has well over a million objects that live as
long as their connection. With Python's default thresholds (700, 10, 10) the steady churn of a
busy site (frames, log rows, futures surviving a young collection, then dying) triggered a full
collection every ~10 s, each a pause of the whole event loop of 0.2–0.9 s: measured 19 s of
collection in 4 minutes per process at 5,000 chargers, and behind most of the MeterValues p99
(697 ms) and of the tail of a limit cut's answers. With (50000, 50, 100): 1.9 s, one full
collection in 4 minutes, p99 185 ms, the cut's answers all in 4.3 s instead of 5.0–5.9 s
(bench/bench_scale.py, PostgreSQL, 5,000 chargers, README).

Objects that exist once the process has started (Django, the apps, compiled schemas: ~140,000)
are moved out of the collector's reach (`gc.freeze`): they live as long as the process, and a
full collection then does not walk them again (~100 ms less per collection).

While a web process starts, the collector is paused (`pause_for_start`, resumed by `tune`):
importing Django, the apps, Celery and redis-py creates ~110,000 objects that all live on, and
Python's default thresholds walked them again and again as they arrived: ~320 collections,
two of them full, ~100 ms of a ~0.45 s import (gc.callbacks, `import evce.asgi`). A restarted
server's chargers wait for that start. What exists when the pause begins (the interpreter and
the server's own modules, ~63,000 objects, no garbage among them: measured) is frozen then, so
the one collection `tune` runs once started walks only what the start added (~40 ms instead of
~80 ms) and still finds the start's garbage (~3,800 objects, ~0.75 MB) before the rest is frozen.
"""

from __future__ import annotations

import gc
import logging

from evce.env import ConfigError

logger = logging.getLogger(__name__)

PYTHON_DEFAULT = "python"


def parse_thresholds(value: str) -> tuple[int, int, int] | None:
    """"50000,50,100" -> (50000, 50, 100); "python" -> None (leave Python's own)."""
    if value.strip().lower() == PYTHON_DEFAULT:
        return None
    parts = [part.strip() for part in value.split(",")]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 3 or numbers[0] < 1 or numbers[1] < 1 or numbers[2] < 1:
        raise ConfigError(f"GC_THRESHOLDS must be three positive integers (e.g. 50000,50,100) or "
                         f"{PYTHON_DEFAULT!r}, not {value!r}")
    return numbers[0], numbers[1], numbers[2]


def pause_for_start() -> None:
    """No collection until `tune` (call it before the imports of a start, and `tune` after);
    what exists now is frozen already."""
    gc.freeze()
    gc.disable()


def tune(thresholds: tuple[int, int, int] | None) -> None:
    """Apply `thresholds` (None: Python's own) and freeze what exists now; call once started.
    The collector runs again afterwards, also when `pause_for_start` stopped it."""
    try:
        if thresholds is None:
            gc.unfreeze()  # Python's own, as if never paused
            return
        gc.collect()  # what start-up left as garbage is not frozen with the rest
        gc.freeze()
        gc.set_threshold(*thresholds)
        logger.debug("garbage collector: thresholds %s, %d objects frozen", thresholds, gc.get_freeze_count())
    finally:
        gc.enable()
