"""Celery tasks of the chargers app: fetch, call the service, return."""

from __future__ import annotations

from functools import partial

from asgiref.sync import async_to_sync
from celery import shared_task

from chargers import services
from chargers.commands import send_call_async
from chargers.configuration import apply_auto_configuration
from chargers.models import Charger
from evce import clock


@shared_task
def mark_silent_chargers_offline() -> list[str]:
    return services.chargers_mark_silent_offline(now=clock.now())


@shared_task
def prune_message_log() -> int:
    return services.message_log_prune(now=clock.now())


@shared_task
def configure_charger(charger_pk: int) -> dict[str, str]:
    """Apply the automatic configuration to a connected charger (after admin acceptance)."""
    charger = Charger.objects.get(pk=charger_pk)
    call = partial(send_call_async, charger.charge_point_id)
    return async_to_sync(apply_auto_configuration)(call, charger_pk=charger_pk)
