"""The OCPP-J 1.6 websocket at /ocpp/<charge_point_id>: frame I/O, nothing else.

Frames are handled one at a time, in arrival order (Channels dispatches a consumer's
messages sequentially), which is what keeps replayed offline messages in order. Calls
to the charger run as separate asyncio tasks: awaiting a charger's answer inside the
receive handler would block the very frame that carries the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import unquote

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.v16 import call as ocpp_call

from chargers import services
from chargers.commands import ChargerCallError, ChargerOffline, ChargerTimeout, reply_to_result
from chargers.frames import CALL, CALLERROR, Frame, FrameProblem, parse_frame, respell_error_code
from chargers.hooks import BOOT_ACCEPTED_STEPS
from chargers.models import Charger, Direction
from chargers.protocol import CentralSystemChargePoint
from evce import clock

logger = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"
CLOSE_REPLACED = 4000
# Application close codes (autobahn allows 1000 or 3000-4999 from a server).
CLOSE_PROTOCOL_ERROR = 4002
CLOSE_UNSUPPORTED_DATA = 4003
_TYPE_NAMES = {2: "CALL", 3: "CALLRESULT", 4: "CALLERROR"}


class _Wire:
    """What the `ocpp` ChargePoint writes to: respells 1.6 error codes, logs, sends."""

    def __init__(self, consumer: OcppConsumer) -> None:
        self._consumer = consumer

    async def send(self, message: str) -> None:
        frame = json.loads(message)
        if frame[0] == CALLERROR:
            frame[2] = respell_error_code(frame[2])
            message = json.dumps(frame, separators=(",", ":"), default=str)
        await self._consumer.log_frame(Direction.OUT, frame)
        await self._consumer.send(text_data=message)


class OcppConsumer(AsyncWebsocketConsumer):
    charge_point_id: str
    charger_pk: int | None = None
    cp: CentralSystemChargePoint | None = None

    async def connect(self) -> None:
        self.charge_point_id = unquote(self.scope["url_route"]["kwargs"]["charge_point_id"])
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted = False
        if SUBPROTOCOL not in self.scope.get("subprotocols", []):
            await self._refuse("no ocpp1.6 subprotocol offered")
            return
        headers = dict(self.scope.get("headers", []))
        try:
            grant = await database_sync_to_async(services.charger_connect)(
                charge_point_id=self.charge_point_id,
                channel_name=self.channel_name,
                credentials=services.parse_basic_auth(headers.get(b"authorization")),
                now=clock.now(),
            )
        except services.ConnectionRefused as refusal:
            await self._refuse(refusal.reason)
            return
        self.charger_pk = grant.charger_pk
        if grant.replaced_channel and grant.replaced_channel != self.channel_name:
            await self.channel_layer.send(grant.replaced_channel, {"type": "ocpp.replaced"})
        self.cp = CentralSystemChargePoint(
            self.charge_point_id,
            _Wire(self),
            charger_pk=grant.charger_pk,
            response_timeout=settings.OCPP_CALL_TIMEOUT,
            on_boot_accepted=self._after_boot_accepted,
        )
        await self.accept(subprotocol=SUBPROTOCOL)
        await self.log_event("connected" + (" (replaced an older connection)" if grant.replaced_channel else ""))

    async def _refuse(self, reason: str) -> None:
        logger.warning("refused websocket for %s: %s", self.charge_point_id, reason)
        await self.log_event("connection refused", error=reason)
        await self.close()

    async def disconnect(self, code: int) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.charger_pk is None:
            return
        still_ours = await database_sync_to_async(services.charger_disconnect)(
            charger_pk=self.charger_pk, channel_name=self.channel_name, now=clock.now()
        )
        await self.log_event(f"disconnected (code {code})" + ("" if still_ours else ", already replaced"))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self.log_event("binary frame refused", error="OCPP-J uses text frames only")
            await self.close(code=CLOSE_UNSUPPORTED_DATA)
            return
        frame = parse_frame(text_data)
        if isinstance(frame, FrameProblem):
            await self._reject_frame(text_data, frame)
            return
        await self.log_frame(Direction.IN, [frame.message_type, frame.unique_id, frame.action, frame.payload])
        if frame.message_type == CALL and not await self._may_call(frame):
            problem = FrameProblem(frame.unique_id, "SecurityError", "Charge point is not accepted")
            await self._send_error(problem)
            return
        assert self.cp is not None  # noqa: S101 - set in connect() before accept
        await self.cp.route_message(text_data)

    async def _reject_frame(self, text: str, problem: FrameProblem) -> None:
        await self.log_event("bad frame", error=f"{problem.code}: {problem.description}", payload=text[:2000])
        if problem.unique_id is None:
            await self.close(code=CLOSE_PROTOCOL_ERROR)
            return
        await self._send_error(problem)

    async def _send_error(self, problem: FrameProblem) -> None:
        await self.log_frame(Direction.OUT, json.loads(problem.call_error()))
        await self.send(text_data=problem.call_error())

    async def _may_call(self, frame: Frame) -> bool:
        """Before acceptance only BootNotification is answered (OCPP-J errata §3.10)."""
        if self._accepted or frame.action == "BootNotification":
            return True
        self._accepted = await database_sync_to_async(
            Charger.objects.filter(pk=self.charger_pk, registration_status="accepted").exists
        )()
        return self._accepted

    # --- server-initiated calls --------------------------------------------------------

    async def ocpp_call(self, event: dict[str, Any]) -> None:
        """Channel-layer request from `send_call`: run it beside the receive loop."""
        self._spawn(self._answer_call(event))

    async def _answer_call(self, event: dict[str, Any]) -> None:
        reply = await self.call_action_reply(event["action"], event["payload"], timeout_s=event.get("timeout"))
        await self.channel_layer.send(event["reply_to"], {"type": "ocpp.reply", **reply})

    async def call_action_reply(
        self, action: str, payload: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Send one CALL over this websocket and describe the outcome as a reply message."""
        if self.cp is None:
            return {"status": "closed"}
        try:
            request = getattr(ocpp_call, action)(**camel_to_snake_case(payload))
            result = await asyncio.wait_for(
                self.cp.call(request, suppress=False), timeout_s or settings.OCPP_CALL_TIMEOUT
            )
        except OCPPError as error:
            return {"status": "error", "code": respell_error_code(error.code),
                    "description": error.description, "details": _jsonable(error.details)}
        except TimeoutError:
            return {"status": "timeout"}
        except (TypeError, AttributeError) as error:
            return {"status": "failed", "description": f"bad {action} payload: {error}"}
        return {"status": "ok", "payload": snake_to_camel_case(remove_nones(serialize_as_dict(result)))}

    async def call_action(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Same-process call, raising like `send_call` does (used by boot steps)."""
        return reply_to_result(self.charge_point_id, action, await self.call_action_reply(action, payload))

    async def _after_boot_accepted(self) -> None:
        self._accepted = True
        self._spawn(self._run_boot_steps())

    async def _run_boot_steps(self) -> None:
        assert self.charger_pk is not None  # noqa: S101
        for step in BOOT_ACCEPTED_STEPS:
            try:
                await step(self.call_action, self.charger_pk)
            except (ChargerCallError, ChargerOffline, ChargerTimeout) as error:
                await self.log_event(f"boot step {step.__name__} failed", error=str(error))
            except Exception:  # one failing step must not stop the others
                logger.exception("boot step %s failed for %s", step.__name__, self.charge_point_id)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ocpp_replaced(self, event: dict[str, Any]) -> None:
        await self.log_event("closing: replaced by a new connection")
        await self.close(code=CLOSE_REPLACED)

    # --- maintenance log ---------------------------------------------------------------

    async def log_frame(self, direction: str, frame: list[Any]) -> None:
        action, payload, error = _frame_parts(frame)
        await database_sync_to_async(services.message_log)(
            charge_point_id=self.charge_point_id, charger_pk=self.charger_pk, direction=direction,
            now=clock.now(), message_type=_TYPE_NAMES.get(frame[0], "?"), unique_id=str(frame[1]), action=action,
            payload=_jsonable(payload), error=error, touch=direction == Direction.IN,
        )

    async def log_event(self, what: str, *, error: str = "", payload: object = None) -> None:
        await database_sync_to_async(services.message_log)(
            charge_point_id=self.charge_point_id, charger_pk=self.charger_pk, direction=Direction.EVENT,
            now=clock.now(), message_type="EVENT", action=what, payload=payload, error=error,
        )


def _frame_parts(frame: list[Any]) -> tuple[str, object, str]:
    """(action, payload, error) of a CALL `[2,id,action,payload]`, CALLRESULT `[3,id,payload]`
    or CALLERROR `[4,id,code,description,details]`, for the log."""
    if frame[0] == CALL:
        return frame[2], frame[3], ""
    if frame[0] == CALLERROR:
        description = frame[3] if len(frame) > 3 else ""
        return "", frame[4] if len(frame) > 4 else None, f"{frame[2]}: {description}"
    return "", frame[2] if len(frame) > 2 else None, ""


def _jsonable(value: object) -> object:
    return json.loads(json.dumps(value, default=str))
