"""Celery tasks of load management. Beat fires `control_tick` every second; the task itself
runs the loop only when the site's loop period has elapsed, so the period is an admin setting."""

from __future__ import annotations

import logging

import redis
from celery import shared_task
from django.conf import settings

from evce import clock
from loadmgmt import services
from loadmgmt.control import TickReport, run_tick
from loadmgmt.models import SiteSettings

logger = logging.getLogger(__name__)
LOCK_KEY = "evce:loadmgmt:tick-lock"
GATE_KEY = "evce:loadmgmt:tick-gate"
LOCK_TIMEOUT_S = 120


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@shared_task
def control_tick(force: bool = False) -> dict[str, object] | None:
    """Run one loop tick unless one is running (never overlap) or the period has not elapsed."""
    client = _redis()
    period_ms = SiteSettings.load().loop_period_s * 1000
    if not force and not client.set(GATE_KEY, "1", nx=True, px=period_ms):
        return None
    lock = client.lock(LOCK_KEY, timeout=LOCK_TIMEOUT_S, blocking=False)
    if not lock.acquire():
        logger.info("control tick skipped: the previous tick is still running")
        return None
    try:
        report: TickReport = run_tick(clock.now())
    finally:
        lock.release()
    return report.__dict__


# A queued re-balance older than this is pointless: a periodic tick has run since.
REBALANCE_EXPIRES_S = 10


def rebalance_soon(charger_pk: int) -> None:
    """Queue an immediate tick after a session started or stopped (see chargers.hooks)."""
    control_tick.apply_async(kwargs={"force": True}, expires=REBALANCE_EXPIRES_S)


@shared_task
def prune_setpoints() -> int:
    return services.setpoints_prune(now=clock.now())
