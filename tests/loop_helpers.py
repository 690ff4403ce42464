"""Helpers for tests that run the control loop in-process against real chargers.

A tick hands its profiles over and returns; the answers arrive in the Daphne process and are
recorded there. `settle` runs ticks and waits for those answers, as the periodic loop would.
"""

from __future__ import annotations

import datetime as dt

from evce import clock
from loadmgmt.control import TickReport, run_tick
from loadmgmt.models import LimitState
from tests.conftest import wait_until


def no_pending() -> bool:
    return not LimitState.objects.filter(pending_a__isnull=False).exists()


def settle(now: dt.datetime | None = None, *, max_ticks: int = 8, timeout_s: float = 10) -> list[TickReport]:
    """Tick until a tick sends nothing; after each, wait for every answer. Returns the reports."""
    reports = []
    for _ in range(max_ticks):
        wait_until(no_pending, timeout_s=timeout_s)
        report = run_tick(now or clock.now())
        reports.append(report)
        wait_until(no_pending, timeout_s=timeout_s)
        if report.sent == 0:
            return reports
    raise AssertionError(f"the loop did not settle in {max_ticks} ticks: {reports}")
