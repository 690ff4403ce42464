"""Turn an allocation into SetChargingProfile calls, send what changed, record everything.

One failing charger never stops the others: all calls run concurrently, each with its own
timeout, and each outcome (Accepted, Rejected, offline, no answer) is stored where the admin
shows it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.db.models import Max

from chargers.commands import CallFailed, send_call_async
from loadmgmt import profiles, services
from loadmgmt.engine import Allocation
from loadmgmt.inputs import LoopInputs
from loadmgmt.models import AppliedLimit, Setpoint

logger = logging.getLogger(__name__)
CALL_TIMEOUT_S = 10.0


@dataclass
class ProfileCommand:
    charger_pk: int
    charge_point_id: str
    connector_id: int
    purpose: str
    transaction_id: int | None
    limit_a: float
    paused: bool
    state_since: float
    payload: dict[str, Any]
    status: str = ""


def plan(
    inputs: LoopInputs, allocation: Allocation, safe_limits: dict[int, float], now: dt.datetime
) -> list[ProfileCommand]:
    """The profiles to send this tick: changed session limits, then changed safe defaults."""
    applied = inputs.applied
    commands: list[ProfileCommand] = []
    for session_id, decision in sorted(allocation.limits.items()):
        ctx = inputs.contexts[session_id]
        limit = 0.0 if decision.paused else profiles.round_limit(decision.limit_a)
        if _changed(applied.get((ctx.charger_pk, ctx.connector_id)), limit, decision.paused, ctx.transaction_id,
                    inputs.settings.hysteresis_a, now):
            payload = profiles.tx_payload(ctx.connector_id, ctx.transaction_id, limit, ctx.number_phases,
                                          ctx.rate_unit)
            commands.append(ProfileCommand(ctx.charger_pk, ctx.charge_point_id, ctx.connector_id, profiles.TX,
                                           ctx.transaction_id, limit, decision.paused, decision.state_since, payload))
    for charger in inputs.chargers:
        limit = safe_limits.get(charger.pk, 0.0)
        if _changed(applied.get((charger.pk, 0)), limit, False, None, 0.1, now):
            commands.append(ProfileCommand(charger.pk, charger.charge_point_id, 0, profiles.TX_DEFAULT, None, limit,
                                           False, 0.0, profiles.tx_default_payload(
                                               limit, charger.phases, inputs.rate_units.get(charger.pk, "A"))))
    return commands


def _changed(
    previous: AppliedLimit | None, limit: float, paused: bool, transaction_id: int | None, hysteresis: float,
    now: dt.datetime,
) -> bool:
    return profiles.needs_sending(
        previous_limit_a=None if previous is None else previous.limit_a,
        previous_paused=None if previous is None else previous.paused,
        previous_transaction_id=None if previous is None else previous.transaction_id,
        previous_ok=previous is not None and previous.status == "Accepted",
        seconds_since_sent=0.0 if previous is None else (now - previous.sent_at).total_seconds(),
        limit_a=limit, paused=paused, transaction_id=transaction_id, hysteresis_a=hysteresis,
    )


async def _send_one(command: ProfileCommand) -> None:
    try:
        answer = await send_call_async(command.charge_point_id, "SetChargingProfile", command.payload,
                                       timeout_s=CALL_TIMEOUT_S)
        command.status = str(answer.get("status", "?"))
    except CallFailed as error:
        command.status = f"{type(error).__name__}: {error}"[:60]
    except Exception as error:  # one charger's failure must never stop the loop for the others
        logger.exception("SetChargingProfile to %s failed", command.charge_point_id)
        command.status = f"error: {error}"[:60]


async def _send_all(commands: list[ProfileCommand]) -> None:
    await asyncio.gather(*(_send_one(command) for command in commands))


def send(commands: list[ProfileCommand]) -> None:
    if commands:
        async_to_sync(_send_all)(commands)


def record(
    inputs: LoopInputs, allocation: Allocation, commands: list[ProfileCommand], now: dt.datetime
) -> None:
    """Store what was sent (AppliedLimit) and every decision that changed (setpoint history)."""
    for command in commands:
        services.applied_limit_record(
            charger_pk=command.charger_pk, connector_id=command.connector_id, purpose=command.purpose,
            transaction_id=command.transaction_id, limit_a=command.limit_a, paused=command.paused,
            state_since=command.state_since, status=command.status, now=now,
        )
    sent = {(c.charger_pk, c.connector_id, c.transaction_id): c for c in commands}
    previous = _last_decisions([ctx.transaction_id for ctx in inputs.contexts.values()])
    rows = []
    for session_id, decision in allocation.limits.items():
        ctx = inputs.contexts[session_id]
        command = sent.get((ctx.charger_pk, ctx.connector_id, ctx.transaction_id))
        limit = 0.0 if decision.paused else profiles.round_limit(decision.limit_a)
        key = (limit, decision.paused, decision.binding)
        if command is None and previous.get(ctx.transaction_id) == key:
            continue
        rows.append(Setpoint(timestamp=now, charger_id=ctx.charger_pk, connector_id=ctx.connector_id,
                             transaction_id=ctx.transaction_id, limit_a=limit, paused=decision.paused,
                             binding=decision.binding[:120], overdraw=decision.overdraw, sent=command is not None,
                             status="" if command is None else command.status))
    services.setpoints_record(rows)


def _last_decisions(transaction_ids: list[int]) -> dict[int, tuple[float, bool, str]]:
    if not transaction_ids:
        return {}
    last_ids = (Setpoint.objects.filter(transaction_id__in=transaction_ids).values("transaction_id")
                .annotate(last=Max("id")).values_list("last", flat=True))
    return {row.transaction_id: (row.limit_a, row.paused, row.binding)
            for row in Setpoint.objects.filter(id__in=list(last_ids))}
