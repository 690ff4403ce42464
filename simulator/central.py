"""A minimal in-process OCPP 1.6J central system, to exercise simulated chargers without Django.

Tests of the simulator itself (and scale checks: 250 chargers in one process) need a server
that answers instantly and lets the test send SetChargingProfile by hand; the real
controller is tested against Daphne instead. It accepts every boot, authorizes every id tag
except those in :attr:`MiniCentral.refused_tags`, numbers transactions, and records what
it received.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections import defaultdict
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action


class CentralSide(ChargePoint):
    """The central system's end of one charger's websocket."""

    def __init__(self, cp_id: str, connection: Any, central: MiniCentral) -> None:
        """Answers within ``central``'s rules; calls to the charger time out after 3 s."""
        super().__init__(cp_id, connection, response_timeout=3)
        self.central = central

    def _record(self, action: str, payload: dict[str, Any]) -> None:
        self.central.received[self.id].append((action, payload))

    @on(Action.boot_notification)
    async def on_boot(self, charge_point_vendor: str, charge_point_model: str, **extra: Any) -> Any:
        """Always Accepted."""
        self._record("BootNotification", {"vendor": charge_point_vendor, "model": charge_point_model})
        return call_result.BootNotification(current_time=dt.datetime.now(dt.UTC).isoformat(), interval=300,
                                            status="Accepted")

    @on(Action.heartbeat)
    async def on_heartbeat(self) -> Any:
        """The time."""
        self._record("Heartbeat", {})
        return call_result.Heartbeat(current_time=dt.datetime.now(dt.UTC).isoformat())

    @on(Action.status_notification)
    async def on_status(self, connector_id: int, error_code: str, status: str, **extra: Any) -> Any:
        """Recorded."""
        self._record("StatusNotification", {"connector_id": connector_id, "status": status})
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str) -> Any:
        """Accepted unless refused by the test."""
        self._record("Authorize", {"id_tag": id_tag})
        return call_result.Authorize(id_tag_info={"status": self.central.tag_status(id_tag)})

    @on(Action.start_transaction)
    async def on_start(self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **extra: Any) -> Any:
        """A new transaction id; the idTagInfo status the test chose (``start_status``)."""
        self._record("StartTransaction", {"connector_id": connector_id, "id_tag": id_tag})
        status = self.central.start_status.get(id_tag, "Accepted")
        return call_result.StartTransaction(transaction_id=next(self.central.transaction_ids),
                                            id_tag_info={"status": status})

    @on(Action.stop_transaction)
    async def on_stop(self, meter_stop: int, timestamp: str, transaction_id: int, **extra: Any) -> Any:
        """Recorded (reason included)."""
        self._record("StopTransaction", {"transaction_id": transaction_id, "meter_stop": meter_stop, **extra})
        return call_result.StopTransaction()

    @on(Action.meter_values)
    async def on_meter_values(self, connector_id: int, meter_value: list[dict[str, Any]], **extra: Any) -> Any:
        """Recorded as received."""
        self._record("MeterValues", {"connector_id": connector_id, "meter_value": meter_value, **extra})
        return call_result.MeterValues()


class MiniCentral:
    """A websocket server on 127.0.0.1 speaking OCPP 1.6J as a lenient central system."""

    def __init__(self) -> None:
        """Not listening until :meth:`start`."""
        self.points: dict[str, CentralSide] = {}
        self.received: defaultdict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self.refused_tags: set[str] = set()
        self.start_status: dict[str, str] = {}
        self.transaction_ids = itertools.count(1)
        self.connected = asyncio.Event()
        self._server: Any = None
        self.url = ""

    def tag_status(self, id_tag: str) -> str:
        """Authorize answer for ``id_tag``."""
        return "Invalid" if id_tag in self.refused_tags else "Accepted"

    async def start(self) -> str:
        """Listen on a free port; the base URL for chargers (``ws://127.0.0.1:PORT/ocpp``)."""
        self._server = await websockets.serve(
            self._handle, "127.0.0.1", 0, subprotocols=[websockets.Subprotocol("ocpp1.6")], ping_interval=None
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ocpp"
        return self.url

    async def stop(self) -> None:
        """Close every connection and the listener."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, connection: Any) -> None:
        cp_id = connection.request.path.rstrip("/").rsplit("/", 1)[-1]
        point = CentralSide(cp_id, connection, self)
        self.points[cp_id] = point
        self.connected.set()
        try:
            await point.start()
        except websockets.ConnectionClosed:
            pass

    def actions(self, cp_id: str, action: str) -> list[dict[str, Any]]:
        """Payloads of ``action`` received from ``cp_id``, oldest first."""
        return [payload for name, payload in self.received[cp_id] if name == action]

    async def set_profile(self, cp_id: str, connector_id: int, profile: dict[str, Any]) -> str:
        """Send SetChargingProfile (camelCase profile); the status, or raise TimeoutError."""
        answer = await self.points[cp_id].call(
            call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=profile), suppress=False
        )
        return str(answer.status)


def tx_profile(limit: float, *, profile_id: int = 2001, unit: str = "A", phases: int = 3,
               transaction_id: int | None = None, stack_level: int = 0) -> dict[str, Any]:
    """A one-period TxProfile as the controller sends it (camelCase)."""
    profile: dict[str, Any] = {
        "chargingProfileId": profile_id, "stackLevel": stack_level, "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": {"chargingRateUnit": unit,
                             "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit, "numberPhases": phases}]},
    }
    if transaction_id is not None:
        profile["transactionId"] = transaction_id
    return profile


def tx_default_profile(limit: float, *, profile_id: int = 1000, unit: str = "A", phases: int = 3) -> dict[str, Any]:
    """A one-period TxDefaultProfile (for connector 0)."""
    profile = tx_profile(limit, profile_id=profile_id, unit=unit, phases=phases)
    profile["chargingProfilePurpose"] = "TxDefaultProfile"
    return profile
