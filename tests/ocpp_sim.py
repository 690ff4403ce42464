"""A simulated charge point for tests: the `ocpp` library's ChargePoint over `websockets`.

It runs its own asyncio loop in a thread so that a synchronous test can drive it and, at
the same time, call `send_call` or query the database like a Celery task would.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import threading
import time
from collections.abc import Coroutine
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action


def utc_iso(moment: dt.datetime | None = None) -> str:
    return (moment or dt.datetime.now(dt.UTC)).isoformat()


class SimulatedChargePoint(ChargePoint):
    """Answers central-system requests and records them; statuses are configurable."""

    def __init__(self, cp_id: str, connection: Any) -> None:
        super().__init__(cp_id, connection, response_timeout=10)
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.arrived: list[tuple[str, float]] = []  # (action, time.monotonic()) of each request, in order
        self.delays: dict[str, float] = {}  # action -> seconds to wait before answering it
        self.answers: dict[str, str] = {}
        self.config: dict[str, str] = {"HeartbeatInterval": "300", "ChargeProfileMaxStackLevel": "8"}
        self.silent = False

    def _record(self, action: str, payload: dict[str, Any]) -> None:
        self.received.append((action, payload))
        self.arrived.append((action, time.monotonic()))

    async def _maybe_hang(self) -> None:
        if self.silent:
            await asyncio.sleep(3600)

    @on(Action.reset)
    async def on_reset(self, **payload: Any):
        self._record("Reset", payload)
        await self._maybe_hang()
        return call_result.Reset(status=self.answers.get("Reset", "Accepted"))

    @on(Action.change_configuration)
    async def on_change_configuration(self, key: str, value: str):
        self._record("ChangeConfiguration", {"key": key, "value": value})
        status = self.answers.get(f"ChangeConfiguration:{key}", self.answers.get("ChangeConfiguration", "Accepted"))
        if status in {"Accepted", "RebootRequired"}:
            self.config[key] = value
        return call_result.ChangeConfiguration(status=status)

    @on(Action.get_configuration)
    async def on_get_configuration(self, key: list[str] | None = None):
        self._record("GetConfiguration", {"key": key})
        items = [{"key": k, "value": v, "readonly": False} for k, v in sorted(self.config.items())]
        return call_result.GetConfiguration(configuration_key=items)

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]):
        self._record("SetChargingProfile", {"connector_id": connector_id, "cs_charging_profiles": cs_charging_profiles})
        await asyncio.sleep(self.delays.get("SetChargingProfile", 0.0))
        return call_result.SetChargingProfile(status=self.answers.get("SetChargingProfile", "Accepted"))

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(self, **payload: Any):
        self._record("ClearChargingProfile", payload)
        return call_result.ClearChargingProfile(status="Accepted")

    @on(Action.remote_start_transaction)
    async def on_remote_start(self, id_tag: str, **payload: Any):
        self._record("RemoteStartTransaction", {"id_tag": id_tag, **payload})
        return call_result.RemoteStartTransaction(status=self.answers.get("RemoteStartTransaction", "Accepted"))

    @on(Action.remote_stop_transaction)
    async def on_remote_stop(self, transaction_id: int):
        self._record("RemoteStopTransaction", {"transaction_id": transaction_id})
        return call_result.RemoteStopTransaction(status="Accepted")

    @on(Action.send_local_list)
    async def on_send_local_list(self, **payload: Any):
        self._record("SendLocalList", payload)
        return call_result.SendLocalList(status=self.answers.get("SendLocalList", "Accepted"))

    @on(Action.get_local_list_version)
    async def on_get_local_list_version(self):
        self._record("GetLocalListVersion", {})
        return call_result.GetLocalListVersion(list_version=int(self.answers.get("GetLocalListVersion", "0")))

    @on(Action.trigger_message)
    async def on_trigger_message(self, **payload: Any):
        self._record("TriggerMessage", payload)
        return call_result.TriggerMessage(status="Accepted")

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(self, **payload: Any):
        self._record("GetCompositeSchedule", payload)
        return call_result.GetCompositeSchedule(status="Rejected")

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, connector_id: int):
        self._record("UnlockConnector", {"connector_id": connector_id})
        return call_result.UnlockConnector(status="Unlocked")

    @on(Action.change_availability)
    async def on_change_availability(self, **payload: Any):
        self._record("ChangeAvailability", payload)
        return call_result.ChangeAvailability(status="Accepted")

    @on(Action.clear_cache)
    async def on_clear_cache(self):
        self._record("ClearCache", {})
        return call_result.ClearCache(status="Accepted")

    @on(Action.update_firmware)
    async def on_update_firmware(self, **payload: Any):
        self._record("UpdateFirmware", payload)
        return call_result.UpdateFirmware()

    @on(Action.get_diagnostics)
    async def on_get_diagnostics(self, **payload: Any):
        self._record("GetDiagnostics", payload)
        return call_result.GetDiagnostics(file_name="diag.zip")

    @on(Action.reserve_now)
    async def on_reserve_now(self, **payload: Any):
        self._record("ReserveNow", payload)
        return call_result.ReserveNow(status="Accepted")

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, reservation_id: int):
        self._record("CancelReservation", {"reservation_id": reservation_id})
        return call_result.CancelReservation(status="Accepted")

    @on(Action.data_transfer)
    async def on_data_transfer(self, vendor_id: str, **payload: Any):
        self._record("DataTransfer", {"vendor_id": vendor_id, **payload})
        return call_result.DataTransfer(status="Accepted", data="pong")


class ChargerSim:
    """Sync façade over one simulated charger connection running in a background loop."""

    def __init__(self, url: str, cp_id: str, *, password: str | None = None, subprotocols: list[str] | None = None):
        self.url = f"{url}/ocpp/{cp_id}"
        self.cp_id = cp_id
        self.password = password
        self.subprotocols = subprotocols if subprotocols is not None else ["ocpp1.6"]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ws: Any = None
        self.cp: SimulatedChargePoint | None = None
        self._serve: asyncio.Future[Any] | None = None

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def connect(self) -> ChargerSim:
        self.run(self._connect())
        return self

    async def _connect(self) -> None:
        headers = {}
        if self.password is not None:
            token = base64.b64encode(f"{self.cp_id}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        self.ws = await websockets.connect(
            self.url, subprotocols=self.subprotocols, additional_headers=headers, open_timeout=10
        )
        self.cp = SimulatedChargePoint(self.cp_id, self.ws)
        self._serve = asyncio.ensure_future(self._serve_forever())

    async def _serve_forever(self) -> None:
        assert self.cp is not None
        try:
            await self.cp.start()
        except websockets.ConnectionClosed:
            pass

    def call(self, payload: Any, *, suppress: bool = False) -> Any:
        assert self.cp is not None
        return self.run(self.cp.call(payload, suppress=suppress))

    def send_raw(self, text: str | bytes) -> None:
        self.run(self.ws.send(text))

    def recv_raw_response(self, timeout: float = 10) -> Any:
        """Next CALLRESULT/CALLERROR the server sent (frames are queued by the ChargePoint)."""
        assert self.cp is not None
        return self.run(asyncio.wait_for(self.cp._response_queue.get(), timeout), timeout + 1)

    def profile_limits(self, purpose: str) -> list[tuple[int, float]]:
        """(connector, limit) of every SetChargingProfile of `purpose` received, oldest first."""
        assert self.cp is not None
        found = []
        for action, payload in list(self.cp.received):
            if action != "SetChargingProfile":
                continue
            profile = payload["cs_charging_profiles"]
            if profile["charging_profile_purpose"] == purpose:
                limit = float(profile["charging_schedule"]["charging_schedule_period"][0]["limit"])
                found.append((payload["connector_id"], limit))
        return found

    def last_tx_limit(self) -> float | None:
        found = self.profile_limits("TxProfile")
        return found[-1][1] if found else None

    def boot(self, vendor: str = "TestVendor", model: str = "TestModel") -> Any:
        return self.call(call.BootNotification(charge_point_vendor=vendor, charge_point_model=model))

    def wait_closed(self, timeout: float = 10) -> int | None:
        async def _wait() -> int | None:
            await asyncio.wait_for(self.ws.wait_closed(), timeout)
            return self.ws.close_code

        return self.run(_wait(), timeout + 1)

    def close(self) -> None:
        if not self.thread.is_alive():
            return  # closed already (a test may close before the fixture's teardown does)
        if self.ws is not None:
            try:
                self.run(self.ws.close(), 5)
            except Exception:  # noqa: BLE001 - closing a dead socket in teardown
                pass
        if self._serve is not None:
            self.loop.call_soon_threadsafe(self._serve.cancel)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
