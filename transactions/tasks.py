"""Celery tasks of the transactions app: fetch, call the service, return."""

from __future__ import annotations

from celery import shared_task

from evce import clock
from transactions import services


@shared_task
def close_stale_transactions() -> list[int]:
    return services.transactions_close_stale(now=clock.now())


@shared_task
def compact_meter_samples() -> int:
    return services.meter_samples_compact(now=clock.now())
