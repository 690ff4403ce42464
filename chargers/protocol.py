"""OCPP 1.6 handlers: convert a payload, call a service, return a call_result.

No rules live here; they are in the services. The consumer owns the websocket and hands
each frame to `route_message`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import decimal
import functools
import inspect
import itertools
import json
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils.dateparse import parse_datetime
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.exceptions import (
    FormatViolationError,
    GenericError,
    NotImplementedError,
    NotSupportedError,
    OccurenceConstraintViolationError,
    OCPPError,
    PropertyConstraintViolationError,
    ProtocolError,
    SecurityError,
    TypeConstraintViolationError,
)
from ocpp.routing import after, on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from badges.services import AuthorizationStatus, IdTagInfo, badge_authorize
from chargers import services
from chargers.batcher import Batcher
from chargers.frames import CALL, CALLERROR, CALLRESULT, FrameProblem, parse_frame
from chargers.hooks import SESSION_CHANGE_LISTENERS
from chargers.loops import PerLoop
from chargers.models import Charger
from chargers.ratelimit import ThrottledLog
from chargers.schemas import SchemaProblem, schema_problem
from chargers.writebuffer import MeterValuesWrite, StatusWrite, write_buffer
from evce import clock
from transactions import services as tx_services

logger = logging.getLogger(__name__)

# Vendor-specific DataTransfer handlers: vendor id → (message id, data) → (status, data).
DataTransferHandler = Callable[[str | None, str | None], tuple[str, str | None]]
DATA_TRANSFER_HANDLERS: dict[str, DataTransferHandler] = {}


def parse_ocpp_time(value: str, field: str) -> dt.datetime:
    parsed = parse_datetime(value)
    if parsed is None or parsed.tzinfo is None:
        raise TypeConstraintViolationError(details={"cause": f"{field} is not an ISO 8601 date-time with zone"})
    return parsed


_throttled = ThrottledLog(logger)

# The message ids of our CALLs: this process's random prefix and a counter. OCPP-J only asks an
# id to be unique among the sender's calls on the connection (§4.1.1, at most 36 characters); a
# uuid4 each read the system's random source (2.5 % of a web process's event loop while 5,000
# chargers booted, py-spy), and the prefix still tells one process's calls from another's in logs.
_CALL_ID_PREFIX = secrets.token_hex(4)
_call_numbers = itertools.count(1)


def next_call_id() -> str:
    """A message id for a CALL of this process: unique among its calls, 36 characters at most."""
    return f"{_CALL_ID_PREFIX}-{next(_call_numbers):x}"


class _LibraryLog:
    """The logger handed to the `ocpp` library.

    The library logs every frame at INFO and every refused payload with an ERROR
    traceback that echoes the whole payload (491 MB for a flood of bad frames). Here a
    refusal (an OCPPError: the charger gets its CALLERROR) becomes one throttled line
    without the payload; an unexpected exception in a handler keeps its traceback but
    not the payload either.
    """

    __slots__ = ("_id",)  # one per connected charger

    def __init__(self, charge_point_id: str) -> None:
        self._id = charge_point_id

    def debug(self, *_: object, **__: object) -> None:
        return None

    info = debug

    def warning(self, message: str, *args: object, **_: object) -> None:
        _throttled.warning(("lib", self._id), "%s: %s", self._id, str(message)[:80])

    error = warning

    def exception(self, message: str, *args: object, **_: object) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OCPPError):
            _throttled.warning(("refused", self._id), "%s: handler refused a frame: %s %s",
                               self._id, error.code, str(error.description)[:120])
        else:
            logger.error("%s: a handler failed (%s)", self._id, type(error).__name__, exc_info=True)



class _Route(NamedTuple):
    """What runs for one action: its `@on` handler and `@after` hook (plain functions)."""

    on: Callable[..., Awaitable[Any]] | None
    after: Callable[..., Awaitable[Any]] | None
    on_takes_unique_id: bool
    after_takes_unique_id: bool


def _route_table(cls: type) -> dict[str, _Route]:
    """action → _Route of the `@on`/`@after` functions of `cls` (the library builds this
    per connection, as bound methods; here once per class)."""
    found: dict[str, dict[str, Any]] = {}
    for name in dir(cls):
        function = getattr(cls, name, None)
        for marker in ("_on_action", "_after_action"):
            action = getattr(function, marker, None)
            if action is not None:
                found.setdefault(str(getattr(action, "value", action)), {})[marker] = function
    table = {}
    for action, functions in found.items():
        handler, hook = functions.get("_on_action"), functions.get("_after_action")
        table[action] = _Route(handler, hook, _takes_unique_id(handler), _takes_unique_id(hook))
    return table


def _takes_unique_id(function: Callable[..., Any] | None) -> bool:
    return function is not None and "call_unique_id" in inspect.signature(function).parameters


_KNOWN_ACTIONS = frozenset(action.value for action in Action)


@functools.lru_cache(maxsize=1024)
def _snake(key: str) -> str:
    """An OCPP camelCase key as the library's snake_case keyword (`connectorId` → `connector_id`)."""
    return next(iter(camel_to_snake_case({key: None})))


@functools.lru_cache(maxsize=1024)
def _camel(key: str) -> str:
    """A snake_case field as its OCPP camelCase key, spelled as the library spells it."""
    return next(iter(snake_to_camel_case({key: None})))


def _wire(value: Any) -> Any:
    """A `call`/`call_result` dataclass (or what it holds) as its OCPP JSON value: camelCase
    keys, None fields left out (the library's serialize_as_dict + remove_nones + camelCase)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_camel(field.name): _wire(item) for field in dataclasses.fields(value)
                if (item := getattr(value, field.name)) is not None}
    if isinstance(value, dict):
        return {_camel(key): _wire(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_wire(item) for item in value if item is not None]
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


_ERRORS_BY_CODE: dict[str, type[OCPPError]] = {
    "TypeConstraintViolation": TypeConstraintViolationError,
    "ProtocolError": ProtocolError,
    "FormationViolation": FormatViolationError,  # respelled FormationViolation on the wire
    "OccurenceConstraintViolation": OccurenceConstraintViolationError,
    "PropertyConstraintViolation": PropertyConstraintViolationError,
}


def _schema_error(problem: SchemaProblem) -> OCPPError:
    return _ERRORS_BY_CODE.get(problem.code, FormatViolationError)(details={"cause": problem.description})


def _call_error(unique_id: str, error: Exception) -> str:
    """The CALLERROR answering `unique_id` for `error` (InternalError unless an OCPPError)."""
    if isinstance(error, OCPPError):
        code, description, details = error.code, error.description, error.details
    else:
        code, description, details = "InternalError", "An unexpected error occurred.", {}
    return json.dumps([CALLERROR, unique_id, code, description, details], separators=(",", ":"), default=str)


def call_error_exception(message: list[Any]) -> OCPPError:
    """The OCPPError a charger's CALLERROR `[4, id, code, description, details]` stands for."""
    code, description, details = (list(message[2:5]) + ["", "", {}])[:3]
    for error in OCPPError.__subclasses__():
        if error.code == code:
            return error(description=description, details=details if isinstance(details, dict) else {})
    return GenericError(description=f"{code}: {description}", details=details if isinstance(details, dict) else {})


# @after hooks run as tasks; held here until done (the event loop keeps only weak references).
_hooks_running: set[asyncio.Future[Any]] = set()


def _spawn(coroutine: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(coroutine)
    _hooks_running.add(task)
    task.add_done_callback(_hooks_running.discard)


class CentralSystemChargePoint:
    """The central system's side of one charge point's connection.

    Routes frames the consumer already parsed and checked (chargers.frames) to the `@on`
    handlers below, and sends our CALLs one at a time (OCPP-J §4.1.1). It keeps the
    `ocpp` library's handler contract (`@on`/`@after`, snake_case keyword arguments, a
    `call_result` dataclass back) but not its per-frame machinery, which cost a
    thread-pool hop per schema check, a regex per payload key and a route map of bound
    methods per connection:

    - every payload is checked by the compiled validators of chargers.schemas: a
      charger's CALL before it gets here (chargers.frames), the answers to our calls and
      our own CALLs and answers here, on the event loop;
    - the route table is built once per class;
    - the top-level payload keys become snake_case keyword arguments; nested objects
      (MeterValues' `meterValue`, StopTransaction's `transactionData`) are passed as
      the charger sent them, in OCPP camelCase, which is how they are stored.
    """

    __slots__ = ("id", "charger_pk", "logger", "_connection", "_response_timeout", "_on_boot_accepted",
                 "_on_registration", "_charger_row", "_boot_status", "_outstanding_id",
                 "_waiter", "_call_lock", "_send_frame")
    _routes: dict[str, _Route]

    def __init__(
        self,
        charge_point_id: str,
        connection: Any,
        *,
        charger_pk: int,
        response_timeout: int,
        on_boot_accepted: Callable[[], Awaitable[None]],
        on_registration: Callable[[bool], None] | None = None,
    ) -> None:
        self.id = charge_point_id
        self.charger_pk = charger_pk
        self.logger = _LibraryLog(charge_point_id)
        self._connection = connection
        # A connection with `send_frame(text, frame)` takes the frame we built along with its
        # text, so that it need not decode what we just encoded.
        self._send_frame: Callable[[str, list[Any]], Awaitable[None]] | None = getattr(
            connection, "send_frame", None)
        self._response_timeout = response_timeout
        self._on_boot_accepted = on_boot_accepted
        self._boot_status = ""
        # Who hears whether the charger is accepted each time a boot reads it again.
        self._on_registration = on_registration
        # The charger's row, read by the consumer for the frame being handled (see _charger).
        self._charger_row: Charger | None = None
        # Id of the CALL we sent and wait for (OCPP-J §4.1.1: one at a time), and where its
        # answer goes. Only that answer is taken: anything else is the consumer's to drop.
        self._outstanding_id: str | None = None
        self._waiter: asyncio.Future[tuple[int, list[Any]]] | None = None
        self._call_lock: asyncio.Lock | None = None  # made at the first call

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._routes = _route_table(cls)

    def awaits(self, unique_id: str) -> bool:
        """Is `unique_id` the id of the CALL this side is waiting for an answer to?"""
        return self._outstanding_id is not None and unique_id == self._outstanding_id

    # --- frames from the charger ---------------------------------------------------------

    async def route_message(self, raw: str) -> None:
        """Route one frame given as text (parsed and checked by chargers.frames first)."""
        frame = parse_frame(raw)
        if isinstance(frame, FrameProblem):
            if frame.answerable:
                await self._send(frame.call_error())
            return
        await self.route(frame.message_type, frame.unique_id, frame.action, frame.message)

    async def route(self, message_type: int, unique_id: str, action: str, message: list[Any]) -> None:
        """Handle a CALL (`action`, payload `message[3]`), or hand an answer to our waiting call."""
        if message_type == CALL:
            await self._handle_call(unique_id, action, message[3])
            return
        waiter = self._waiter
        if self.awaits(unique_id) and waiter is not None and not waiter.done():
            waiter.set_result((message_type, message))

    async def _handle_call(self, unique_id: str, action: str, payload: dict[str, Any]) -> None:
        route = self._routes.get(action)
        if route is None or route.on is None:
            error: OCPPError = (NotImplementedError(details={"cause": f"No handler for {action} registered."})
                                if action in _KNOWN_ACTIONS
                                else NotSupportedError(details={"cause": f"{action} not supported by OCPP1.6."}))
            await self._send(_call_error(unique_id, error))
            return
        kwargs = {_snake(key): value for key, value in payload.items()}
        try:
            if route.on_takes_unique_id:
                result = await route.on(self, **kwargs, call_unique_id=unique_id)
            else:
                result = await route.on(self, **kwargs)
            answer = _wire(result)
            problem = schema_problem(CALLRESULT, action, answer)
            if problem is not None:
                raise _schema_error(problem)
        except Exception as error:  # noqa: BLE001 - answered with a CALLERROR, as the library does
            self.logger.exception("Error while handling request")
            await self._send(_call_error(unique_id, error))
            return
        result = [CALLRESULT, unique_id, answer]
        await self._send(json.dumps(result, separators=(",", ":")), result)
        if route.after is not None:
            extra = {"call_unique_id": unique_id} if route.after_takes_unique_id else {}
            # A task: an @after hook may call the charger, whose answer this frame's turn would block.
            _spawn(route.after(self, **kwargs, **extra))

    # --- our calls to the charger --------------------------------------------------------

    async def call(self, payload: Any, suppress: bool = True, unique_id: str | None = None,
                   skip_schema_validation: bool = False) -> Any:
        """Send a `ocpp.v16.call` dataclass, return the `call_result` dataclass of the answer.

        As the library's `ChargePoint.call`: a CALLERROR answer returns None with
        `suppress`, else raises its OCPPError; no answer within the response timeout
        raises TimeoutError. `skip_schema_validation` is accepted and ignored: the
        compiled checks are cheap enough to always run.
        """
        action = type(payload).__name__
        message = await self.request(action, _wire(payload), unique_id=unique_id)
        if message[0] == CALLERROR:
            error = call_error_exception(message)
            if suppress:
                self.logger.warning("Received a CALLError")
                return None
            raise error
        return getattr(call_result, action)(**camel_to_snake_case(message[2]))

    async def request(self, action: str, payload: dict[str, Any], *, unique_id: str | None = None) -> list[Any]:
        """Send the CALL `action` with a camelCase `payload`; return the answer frame.

        The request and a CALLRESULT answer are schema-checked (an OCPPError when one
        breaks the 1.6 schema). One call at a time per charger (OCPP-J §4.1.1).
        """
        problem = schema_problem(CALL, action, payload)
        if problem is not None:
            raise _schema_error(problem)
        unique_id = unique_id if unique_id is not None else next_call_id()
        if self._call_lock is None:
            self._call_lock = asyncio.Lock()
        async with self._call_lock:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            self._outstanding_id = unique_id
            try:
                request = [CALL, unique_id, action, payload]
                await self._send(json.dumps(request, separators=(",", ":")), request)
                async with asyncio.timeout(self._response_timeout):
                    message_type, message = await waiter
            except TimeoutError:
                await write_buffer().flush()  # the unanswered call is on record first
                raise
            finally:
                self._outstanding_id = None
                self._waiter = None
        # The log rows of the call and of its answer, queued without waiting (the call goes out
        # at once, the charger's next frames are not held up), are written before the caller
        # learns the answer.
        await write_buffer().flush()
        if message_type == CALLRESULT:
            answer = message[2] if len(message) > 2 else None
            problem = schema_problem(CALLRESULT, action, answer)
            if problem is not None:
                raise _schema_error(problem)
        return message

    async def _send(self, message: str, frame: list[Any] | None = None) -> None:
        if frame is not None and self._send_frame is not None:
            await self._send_frame(message, frame)
        else:
            await self._connection.send(message)

    def use_charger_row(self, charger: Charger | None) -> None:
        """The charger's row, just read for the frame about to be routed: its handler uses it
        instead of reading it again (None forgets it)."""
        self._charger_row = charger

    async def _charger(self) -> Charger:
        charger, self._charger_row = self._charger_row, None
        if charger is not None:
            return charger
        return await database_sync_to_async(Charger.objects.get)(pk=self.charger_pk)

    @on(Action.boot_notification)
    async def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str, **extra: str):
        info = services.BootInfo(
            vendor=charge_point_vendor,
            model=charge_point_model,
            serial_number=extra.get("charge_point_serial_number", ""),
            charge_box_serial_number=extra.get("charge_box_serial_number", ""),
            firmware_version=extra.get("firmware_version", ""),
            meter_type=extra.get("meter_type", ""),
            meter_serial_number=extra.get("meter_serial_number", ""),
            iccid=extra.get("iccid", ""),
            imsi=extra.get("imsi", ""),
        )
        answer = await boots_recorded().submit(services.BootRecord(
            charger_pk=self.charger_pk, info=info, now=clock.now()))
        self._boot_status = answer.status
        if self._on_registration is not None:
            self._on_registration(answer.status == "Accepted")
        return call_result.BootNotification(
            current_time=clock.now().isoformat(), interval=answer.interval_s, status=answer.status
        )

    @after(Action.boot_notification)
    async def after_boot_notification(self, **_: Any) -> None:
        if self._boot_status == "Accepted":
            await self._on_boot_accepted()

    @on(Action.heartbeat)
    async def on_heartbeat(self):
        return call_result.Heartbeat(current_time=clock.now().isoformat())

    @on(Action.status_notification)
    async def on_status_notification(self, connector_id: int, error_code: str, status: str, **extra: str):
        timestamp = parse_ocpp_time(extra["timestamp"], "timestamp") if "timestamp" in extra else clock.now()
        # Group-committed with other chargers' writes (chargers.writebuffer); answered once stored.
        await write_buffer().submit(StatusWrite(
            charger_pk=self.charger_pk,
            connector_id=connector_id,
            status=status,
            error_code=error_code,
            timestamp=timestamp,
            info=extra.get("info", ""),
            vendor_id=extra.get("vendor_id", ""),
            vendor_error_code=extra.get("vendor_error_code", ""),
        ))
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str):
        charger = await self._charger()
        if charger.is_accepted:
            info = await database_sync_to_async(badge_authorize)(id_tag=id_tag, now=clock.now(), charger=charger)
        else:
            info = IdTagInfo(AuthorizationStatus.INVALID)
        return call_result.Authorize(id_tag_info=info.as_ocpp())

    @on(Action.start_transaction)
    async def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, reservation_id: int | None = None
    ):
        assert self.charger_pk is not None  # noqa: S101 - a consumer's charge point has its charger
        answer = await starts_recorded().submit(ChargerStart(self.charger_pk, functools.partial(
            tx_services.StartRequest,
            connector_id=connector_id,
            id_tag=id_tag,
            meter_start_wh=meter_start,
            timestamp=parse_ocpp_time(timestamp, "timestamp"),
            reservation_id=reservation_id,
            now=clock.now(),
        )))
        if self._on_registration is not None:  # its acceptance, as just read with the start
            self._on_registration(answer is not None)
        if answer is None:
            # Rejected (or set back to pending) while connected: no session may start.
            raise SecurityError(description="Charge point is not accepted")
        return call_result.StartTransaction(
            transaction_id=answer.transaction_id, id_tag_info=answer.id_tag_info.as_ocpp()
        )

    @after(Action.start_transaction)
    async def after_start_transaction(self, **_: Any) -> None:
        await self._notify_session_change()

    @after(Action.stop_transaction)
    async def after_stop_transaction(self, **_: Any) -> None:
        await self._notify_session_change()

    async def _notify_session_change(self) -> None:
        if SESSION_CHANGE_LISTENERS and self.charger_pk is not None:
            await session_changes_told().submit(self.charger_pk)

    @on(Action.stop_transaction)
    async def on_stop_transaction(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str = "Local",
        id_tag: str | None = None,
        transaction_data: list[dict[str, Any]] | None = None,
    ):
        charger = await self._charger()
        info = await database_sync_to_async(tx_services.transaction_stop)(
            charger=charger,
            transaction_id=transaction_id,
            meter_stop_wh=meter_stop,
            timestamp=parse_ocpp_time(timestamp, "timestamp"),
            reason=reason,
            id_tag=id_tag,
            transaction_data=transaction_data or [],  # camelCase, as sent
            now=clock.now(),
        )
        return call_result.StopTransaction(id_tag_info=info.as_ocpp() if info else None)

    @on(Action.meter_values)
    async def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], transaction_id: int | None = None
    ):
        # Group-committed with other chargers' writes (chargers.writebuffer); answered once stored,
        # or once queued with OCPP_METER_VALUES_ANSWER=received (a write that fails is logged),
        # unless the writer is behind (`WriteBuffer.behind`: the answer then waits for it).
        buffer = write_buffer()
        await buffer.submit(MeterValuesWrite(
            charger_pk=self.charger_pk,
            connector_id=connector_id,
            transaction_id=transaction_id,
            meter_values=meter_value,  # camelCase, as sent
        ), wait=settings.OCPP_METER_VALUES_ANSWER == "committed" or buffer.behind())
        return call_result.MeterValues()

    @on(Action.data_transfer)
    async def on_data_transfer(self, vendor_id: str, message_id: str | None = None, data: str | None = None):
        handler = DATA_TRANSFER_HANDLERS.get(vendor_id)
        if handler is None:
            return call_result.DataTransfer(status="UnknownVendorId")
        status, reply = await database_sync_to_async(handler)(message_id, data)
        return call_result.DataTransfer(status=status, data=reply)

    @on(Action.diagnostics_status_notification)
    async def on_diagnostics_status_notification(self, status: str):
        await database_sync_to_async(services.charger_set_field)(
            charger_pk=self.charger_pk, diagnostics_status=status
        )
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    async def on_firmware_status_notification(self, status: str):
        await database_sync_to_async(services.charger_set_field)(charger_pk=self.charger_pk, firmware_status=status)
        return call_result.FirmwareStatusNotification()


CentralSystemChargePoint._routes = _route_table(CentralSystemChargePoint)


# The BootNotifications of the chargers booting at the same time, recorded in one transaction.
boots_recorded = PerLoop(lambda: Batcher(services.charger_boot_many, max_batch=500, name="recording boots"))


@dataclasses.dataclass(frozen=True, eq=False)
class ChargerStart:
    """One StartTransaction of a connected charger, known by its primary key: its row is read with
    the batch's (`starts_with_their_chargers`), then `request(row)` is the start to record.
    Keyed by identity, as `tx_services.StartRequest`."""

    charger_pk: int
    request: Callable[[Charger], tx_services.StartRequest]


def starts_with_their_chargers(starts: Sequence[ChargerStart]) -> dict[ChargerStart, tx_services.StartAnswer | None]:
    """The StartTransactions arriving together: their chargers' rows read, then the starts of the
    accepted ones recorded (`transactions_start_many`), in one step on the database thread. None
    for a charger not accepted (rejected or set back to pending while connected) or deleted.

    Why one step: reading the rows was a hop to the database thread of its own, queued behind
    the other batches of a boot storm, on every session's way to its answer (a StartTransaction
    took 113 ms at the median while 1,000 chargers connected to one process on PostgreSQL)."""
    rows = {charger.pk: charger for charger in Charger.objects.filter(pk__among={s.charger_pk for s in starts})}
    requests = {start: start.request(charger) for start in starts
                if (charger := rows.get(start.charger_pk)) is not None and charger.is_accepted}
    answers = tx_services.transactions_start_many(list(requests.values())) if requests else {}
    return {start: answers[requests[start]] if start in requests else None for start in starts}


# The StartTransactions of chargers starting sessions at the same time, recorded in one transaction.
starts_recorded = PerLoop(lambda: Batcher(starts_with_their_chargers, max_batch=200,
                                          name="recording transaction starts"))


def _tell_session_changes(charger_pks: Sequence[int]) -> dict[int, None]:
    """Every session-change listener, once for the chargers whose session started or stopped
    (each charger once per batch: a start and a stop arriving together are one "look again");
    a listener's failure is logged and never reaches a charger's link."""
    changed = list(dict.fromkeys(charger_pks))
    for listener in SESSION_CHANGE_LISTENERS:
        try:
            listener(changed)
        except Exception:
            logger.exception("session change listener %s failed", listener)
    return dict.fromkeys(changed)


# Session changes told to the listeners in batches: one database-thread step for a burst of starts.
session_changes_told = PerLoop(lambda: Batcher(_tell_session_changes, max_batch=500, name="telling session changes"))
