"""Server-initiated OCPP calls, reachable from any process through the channel layer.

`send_call` is the one way Django views, Celery tasks, management commands and the shell
talk to a charger: it finds the consumer holding the charger's websocket, asks it to send
the CALL, and waits for the answer on a reply channel of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError

from chargers import inbox, schemas
from chargers.frames import SYSTEM_INITIATED
from chargers.models import Charger

logger = logging.getLogger(__name__)

# Margin for the round trip through Redis on top of the charger's own answer time.
_CHANNEL_MARGIN_S = 5.0


class CallFailed(Exception):
    """A server-initiated call did not produce a CALLRESULT."""


class InvalidCall(CallFailed):
    """The action or payload is not a valid OCPP 1.6 central-system request."""


class ChargerOffline(CallFailed):
    """No websocket is open for this charger."""


class LayerUnavailable(CallFailed):
    """The channel layer (Redis) cannot be reached: no call can reach any charger right now."""


class ChargerTimeout(CallFailed):
    """The charger (or the process holding its websocket) did not answer in time."""


class ChargerCallError(CallFailed):
    """The charger answered with a CALLERROR."""

    def __init__(self, code: str, description: str, details: object = None) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details


def validate_call(action: str, payload: dict[str, Any]) -> None:
    """Raise InvalidCall unless `payload` is a schema-valid OCPP 1.6 `action` request.

    With the compiled validators the charger's own frames go through (chargers.schemas): ~10 µs
    a profile and no copy, where the `ocpp` library's jsonschema took ~115 µs (and rewrote the
    schedule's floats in place). A limit cut on 5,000 chargers validates 10,000 profiles.
    """
    if action not in SYSTEM_INITIATED:
        raise InvalidCall(f"{action!r} is not an OCPP 1.6 central-system request")
    if not isinstance(payload, dict):
        raise InvalidCall("the payload must be a JSON object")
    problem = schemas.schema_problem(schemas.CALL, action, payload)
    if problem is not None:
        raise InvalidCall(f"{action} payload rejected ({problem.code}): {problem.description}")


def _channel_of(charge_point_id: str) -> str:
    row = Charger.objects.filter(charge_point_id=charge_point_id).values("connected", "channel_name").first()
    if row is None:
        raise ChargerOffline(f"unknown charger {charge_point_id!r}")
    if not row["connected"] or not row["channel_name"]:
        raise ChargerOffline(f"charger {charge_point_id!r} is offline")
    return str(row["channel_name"])


async def send_call_async(
    charge_point_id: str, action: str, payload: dict[str, Any], *, timeout_s: float | None = None
) -> dict[str, Any]:
    """Send `action` to the charger and return its CALLRESULT payload (camelCase)."""
    validate_call(action, payload)
    timeout = float(timeout_s if timeout_s is not None else settings.OCPP_CALL_TIMEOUT)
    channel = await database_sync_to_async(_channel_of)(charge_point_id)
    layer = get_channel_layer()
    try:
        reply_channel = await layer.new_channel()
        await layer.send(
            channel,
            {"type": "ocpp.call", "action": action, "payload": payload, "reply_to": reply_channel, "timeout": timeout},
        )
        reply = await asyncio.wait_for(layer.receive(reply_channel), timeout + _CHANNEL_MARGIN_S)
    except TimeoutError:
        raise ChargerTimeout(f"charger {charge_point_id!r} did not answer {action} within {timeout:g} s") from None
    except (OSError, RedisError) as error:  # ConnectionError and friends: say so in one line
        raise LayerUnavailable(f"the channel layer (Redis) is unreachable: {error}") from None
    return reply_to_result(charge_point_id, action, reply)


def reply_to_result(charge_point_id: str, action: str, reply: dict[str, Any]) -> dict[str, Any]:
    """Turn the consumer's reply message into a result or the matching exception."""
    status = reply.get("status")
    if status == "ok":
        return dict(reply.get("payload") or {})
    if status == "error":
        raise ChargerCallError(str(reply.get("code")), str(reply.get("description", "")), reply.get("details"))
    if status == "timeout":
        raise ChargerTimeout(f"charger {charge_point_id!r} did not answer {action} in time")
    if status == "closed":
        raise ChargerOffline(f"charger {charge_point_id!r} disconnected before answering {action}")
    raise CallFailed(f"{action} to {charge_point_id!r} failed: {reply.get('description', status)}")


@dataclass(frozen=True, slots=True)
class Cast:
    """A call handed to the process holding a charger's websocket, without waiting for it.

    Its outcome goes to the hook registered under `outcome_hook` (chargers.hooks), with
    `context`, where the websocket is: the sender is free at once.
    """

    channel_name: str
    action: str
    payload: dict[str, Any]
    timeout_s: float
    outcome_hook: str
    context: dict[str, Any]


def tell_registration(charger_pks: Sequence[int], *, accepted: bool) -> int:
    """Tell the connections of these chargers that the operator changed their registration, so
    that it applies from their next frame; returns how many connections were told.

    Without the notice a connection finds out at its next re-read (every ACCEPTANCE_RECHECK_S,
    chargers.consumers), which stays the fallback when the layer is unreachable."""
    channels = list(Charger.objects.filter(pk__in=list(charger_pks), connected=True).exclude(channel_name="")
                    .values_list("channel_name", flat=True))
    if not channels:
        return 0
    return async_to_sync(_send_each)(channels, {"type": "ocpp.registration", "accepted": accepted})


async def _send_each(channels: list[str], message: dict[str, Any]) -> int:
    layer = get_channel_layer()
    sent = 0
    for channel in channels:
        try:
            await layer.send(channel, message)
        except Exception as error:  # noqa: BLE001 - layer down or channel full: the re-read catches up
            logger.warning("could not tell %s of its registration: %s: %s", channel, type(error).__name__, error)
        else:
            sent += 1
    return sent


def cast_calls(casts: list[Cast]) -> list[str | None]:
    """Hand every call over (validated, in one go); per call None, or why it could not be."""
    if not casts:
        return []
    return async_to_sync(_cast_all)(casts)


# Sends in flight at once from one tick. Each holds a Redis connection from the layer's pool, and
# redis-py refuses (MaxConnectionsError) rather than waits once its pool is used up: a limit cut
# on 250 chargers would otherwise lose most of its profiles in one burst.
CAST_CONCURRENCY = 32
# Calls for chargers of one Daphne process travel together, this many per channel-layer message
# (chargers.inbox): each message costs four Redis commands and one place in the process's inbox,
# whatever it carries. ~100 profiles make a message of ~40 KB.
CASTS_PER_MESSAGE = 100


def _cast_message(cast: Cast) -> dict[str, Any]:
    return {"type": "ocpp.call", "action": cast.action, "payload": cast.payload, "timeout": cast.timeout_s,
            "outcome_hook": cast.outcome_hook, "context": cast.context}


async def _cast_all(casts: list[Cast]) -> list[str | None]:
    """Validate, group per receiving process where the layer allows it, send; errors per call."""
    layer = get_channel_layer()
    errors: list[str | None] = [None] * len(casts)
    messages: list[tuple[str, dict[str, Any], list[int]]] = []
    per_process: dict[str, list[int]] = defaultdict(list)  # batch channel → its calls, in the order given
    for n, cast in enumerate(casts):
        if not cast.channel_name:
            errors[n] = "charger offline"
            continue
        try:
            validate_call(cast.action, cast.payload)
        except InvalidCall as error:
            errors[n] = str(error)
            continue
        batch = inbox.batch_channel(layer, cast.channel_name)
        if batch is None:  # a layer without the shared inbox: one message per call
            messages.append((cast.channel_name, _cast_message(cast), [n]))
        else:
            per_process[batch].append(n)
    for batch, numbers in per_process.items():
        for start in range(0, len(numbers), CASTS_PER_MESSAGE):
            part = numbers[start:start + CASTS_PER_MESSAGE]
            items = [[casts[n].channel_name, _cast_message(casts[n])] for n in part]
            messages.append((batch, {"type": inbox.BATCH_TYPE, "items": items}, part))
    # Messages for one channel go one after the other: the layer orders a channel's messages by
    # the time each send reached Redis, so two sends in flight at once could swap a charger's calls.
    per_channel: dict[str, list[tuple[dict[str, Any], list[int]]]] = defaultdict(list)
    for channel, message, numbers in messages:
        per_channel[channel].append((message, numbers))
    slots = asyncio.Semaphore(CAST_CONCURRENCY)

    async def send_in_order(channel: str, queued: list[tuple[dict[str, Any], list[int]]]) -> None:
        for message, numbers in queued:
            try:
                async with slots:
                    await layer.send(channel, message)
            except Exception as error:  # channel full, layer unreachable: the tick goes on for the others
                for n in numbers:
                    errors[n] = f"{type(error).__name__}: {error}"

    await asyncio.gather(*(send_in_order(channel, queued) for channel, queued in per_channel.items()))
    return errors


def send_call(
    charge_point_id: str, action: str, payload: dict[str, Any], *, timeout_s: float | None = None
) -> dict[str, Any]:
    """Synchronous `send_call_async`, for views, tasks, commands and the shell."""
    return async_to_sync(send_call_async)(charge_point_id, action, payload, timeout_s=timeout_s)
