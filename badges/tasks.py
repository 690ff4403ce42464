"""Celery tasks of the badges app: fetch, call the service, return."""

from __future__ import annotations

import asyncio
from functools import partial

from asgiref.sync import async_to_sync
from celery import shared_task
from django.conf import settings

from badges.local_list import badges_validity_started, chargers_due, local_list_sync
from chargers.commands import send_call_async
from chargers.models import Charger
from evce import clock

# Lists pushed at the same time (each waits for its charger's answers).
PARALLEL_PUSHES = 10


@shared_task
def sync_local_lists(charger_pks: list[int] | None = None, force_full: bool = False) -> dict[str, str]:
    """Push local lists: to the given connected chargers (admin action), else to those due (beat)."""
    if charger_pks is None:
        if not settings.BADGES_LOCAL_LIST_SYNC:
            return {}
        now = clock.now()
        badges_validity_started(now=now)
        targets = chargers_due(now=now)
    else:
        targets = list(
            Charger.objects.filter(pk__in=charger_pks, connected=True).values_list("pk", "charge_point_id")
        )
    return async_to_sync(_sync_many)(targets, force_full)


async def _sync_many(targets: list[tuple[int, str]], force_full: bool) -> dict[str, str]:
    gate = asyncio.Semaphore(PARALLEL_PUSHES)

    async def one(charger_pk: int, charge_point_id: str) -> tuple[str, str]:
        async with gate:
            call = partial(send_call_async, charge_point_id)
            return charge_point_id, await local_list_sync(call, charger_pk=charger_pk, force_full=force_full)

    return dict(await asyncio.gather(*(one(pk, cp_id) for pk, cp_id in targets)))
