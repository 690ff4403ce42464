"""OCPP 1.6 handlers: convert a payload, call a service, return a call_result.

No rules live here; they are in the services. The consumer owns the websocket and hands
each frame to `route_message`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.utils.dateparse import parse_datetime
from ocpp.charge_point import snake_to_camel_case
from ocpp.exceptions import OCPPError, SecurityError, TypeConstraintViolationError
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action

from badges.services import AuthorizationStatus, IdTagInfo, badge_authorize
from chargers import services
from chargers.hooks import SESSION_CHANGE_LISTENERS
from chargers.models import Charger
from chargers.ratelimit import ThrottledLog
from chargers.writebuffer import MeterValuesWrite, write_buffer
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


class _LibraryLog:
    """The logger handed to the `ocpp` library.

    The library logs every frame at INFO and every refused payload with an ERROR
    traceback that echoes the whole payload (491 MB for a flood of bad frames). Here a
    refusal (an OCPPError: the charger gets its CALLERROR) becomes one throttled line
    without the payload; an unexpected exception in a handler keeps its traceback but
    not the payload either.
    """

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


class CentralSystemChargePoint(ChargePoint):
    """The central system's side of one charge point's connection."""

    def __init__(
        self,
        charge_point_id: str,
        connection: Any,
        *,
        charger_pk: int,
        response_timeout: int,
        on_boot_accepted: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(charge_point_id, connection, response_timeout=response_timeout,
                         logger=_LibraryLog(charge_point_id))
        self.charger_pk = charger_pk
        self._on_boot_accepted = on_boot_accepted
        self._boot_status = ""
        # Id of the CALL we sent and wait for (OCPP-J §4.1.1: one at a time). Only its
        # answer may enter the library's response queue: anything else would pile up
        # there unread (unbounded memory) and be skipped one by one, recursively, by
        # the next call.
        self._outstanding_id: str | None = None

    def awaits(self, unique_id: str) -> bool:
        """Is `unique_id` the id of the CALL this side is waiting for an answer to?"""
        return self._outstanding_id is not None and unique_id == self._outstanding_id

    async def _send(self, message: str) -> None:
        # The library sends a CALL while it holds its call lock: the CALL sent last is
        # the one outstanding. Its frames start with `[2,"<id>"`.
        if message.startswith("[2,"):
            self._outstanding_id = str(json.loads(message)[1])
        await super()._send(message)

    async def call(self, payload: Any, suppress: bool = True, unique_id: str | None = None,
                   skip_schema_validation: bool = False) -> Any:
        unique_id = unique_id if unique_id is not None else str(self._unique_id_generator())
        try:
            return await super().call(payload, suppress, unique_id, skip_schema_validation)
        finally:
            if self._outstanding_id == unique_id:
                self._outstanding_id = None
            self._drop_stale_answers()

    def _drop_stale_answers(self) -> None:
        """Empty the response queue of answers nobody waits for (one that came after its
        call timed out), keeping the answer of the call now outstanding: the library
        validates a response off the event loop, so the next call may already be out."""
        kept = []
        while not self._response_queue.empty():
            answer = self._response_queue.get_nowait()
            if self.awaits(answer.unique_id):
                kept.append(answer)
        for answer in kept:
            self._response_queue.put_nowait(answer)

    async def _charger(self) -> Charger:
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
        answer = await database_sync_to_async(services.charger_boot)(
            charger_pk=self.charger_pk, info=info, now=clock.now()
        )
        self._boot_status = answer.status
        return call_result.BootNotification(
            current_time=clock.now().isoformat(), interval=answer.interval_s, status=answer.status
        )

    @after(Action.boot_notification)
    async def after_boot_notification(self, **_: Any) -> None:
        if self._boot_status == "Accepted":
            await self._on_boot_accepted()

    # The hot frames skip the library's own schema check: the consumer validated the payload
    # against the same 1.6 schema before routing it (chargers.frames.payload_problem), and
    # the library's second check costs a thread-pool hop per frame and per answer.
    @on(Action.heartbeat, skip_schema_validation=True)
    async def on_heartbeat(self):
        return call_result.Heartbeat(current_time=clock.now().isoformat())

    @on(Action.status_notification)
    async def on_status_notification(self, connector_id: int, error_code: str, status: str, **extra: str):
        timestamp = parse_ocpp_time(extra["timestamp"], "timestamp") if "timestamp" in extra else clock.now()
        await database_sync_to_async(services.connector_status_update)(
            charger_pk=self.charger_pk,
            connector_id=connector_id,
            status=status,
            error_code=error_code,
            info=extra.get("info", ""),
            vendor_id=extra.get("vendor_id", ""),
            vendor_error_code=extra.get("vendor_error_code", ""),
            timestamp=timestamp,
        )
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
        charger = await self._charger()
        if not charger.is_accepted:
            # Rejected (or set back to pending) while connected: no session may start.
            raise SecurityError(description="Charge point is not accepted")
        answer = await database_sync_to_async(tx_services.transaction_start)(
            charger=charger,
            connector_id=connector_id,
            id_tag=id_tag,
            meter_start_wh=meter_start,
            timestamp=parse_ocpp_time(timestamp, "timestamp"),
            reservation_id=reservation_id,
            now=clock.now(),
        )
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
        for listener in SESSION_CHANGE_LISTENERS:
            try:
                await database_sync_to_async(listener)(self.charger_pk)
            except Exception:  # a listener's failure must never reach the charger's link
                logger.exception("session change listener %s failed", listener)

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
            transaction_data=snake_to_camel_case(transaction_data or []),
            now=clock.now(),
        )
        return call_result.StopTransaction(id_tag_info=info.as_ocpp() if info else None)

    @on(Action.meter_values, skip_schema_validation=True)  # validated by the consumer (see on_heartbeat)
    async def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], transaction_id: int | None = None
    ):
        # Group-committed with other chargers' writes (chargers.writebuffer); answered once stored.
        await write_buffer().submit(MeterValuesWrite(
            charger_pk=self.charger_pk,
            connector_id=connector_id,
            transaction_id=transaction_id,
            meter_values=snake_to_camel_case(meter_value),
        ))
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
