"""Celery tasks of the meters app: fetch, call the service, return. Schedules: evce/celery.py."""

from __future__ import annotations

import logging

import redis
from celery import shared_task
from django.conf import settings
from redis.exceptions import LockError

from evce import clock
from meters import services

logger = logging.getLogger(__name__)
POLL_LOCK_KEY = "evce:meters:poll-lock"


def poll_lock(timeout_s: float) -> redis.lock.Lock:
    """The lock that keeps two polls from overlapping (non-blocking: a busy poll means skip)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    return client.lock(POLL_LOCK_KEY, timeout=timeout_s, blocking=False)


@shared_task
def poll_due_meters() -> dict[str, object] | None:
    """Poll the meters whose period has elapsed, unless the previous poll is still running."""
    lock = poll_lock(services.poll_time_bound_s())
    if not lock.acquire():
        logger.debug("meter poll skipped: the previous poll is still running")
        return None
    try:
        report = services.meters_poll_due(now=clock.now())
    finally:
        try:
            lock.release()
        except LockError:
            logger.warning("meter poll outlived its lock (%s): another poll may have overlapped", POLL_LOCK_KEY)
    return report.as_dict()


@shared_task
def flush_meter_history() -> int:
    return services.meters_flush_history(now=clock.now())


@shared_task
def prune_meter_history() -> int:
    return services.meters_prune_history(now=clock.now())
