"""A fake CPO backend for the proxy tests: the `ocpp` library's central-system side over `websockets`.

It runs its own asyncio loop in a thread (like tests.ocpp_sim.ChargerSim), records every CALL it
receives with its arrival time, answers with configurable statuses, and sends commands to the
charge points connected to it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import itertools
import json
import ssl
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp.messages import MessageType, unpack
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tests.embedded_services import free_port


class CpoSide(ChargePoint):
    def __init__(self, cp_id: str, connection: Any, cpo: FakeCpo) -> None:
        super().__init__(cp_id, connection, response_timeout=10)
        self.cpo = cpo

    async def route_message(self, raw_msg: str) -> None:
        msg = unpack(raw_msg)
        if msg.message_type_id == MessageType.Call:
            self.cpo.received.append((self.id, msg.action, msg.payload, time.perf_counter()))
            reject = self.cpo.reject.get(msg.action, 0)
            if reject:
                self.cpo.reject[msg.action] = reject - 1
                await self._send(f'[4,"{msg.unique_id}","InternalError","refused by the test",{{}}]')
                return
        await super().route_message(raw_msg)

    @on(Action.boot_notification)
    async def on_boot(self, **_: Any):
        return call_result.BootNotification(current_time=_now(), interval=self.cpo.boot_interval_s,
                                            status=self.cpo.boot_status)

    @on(Action.heartbeat)
    async def on_heartbeat(self):
        return call_result.Heartbeat(current_time=_now())

    @on(Action.status_notification)
    async def on_status(self, **_: Any):
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str):
        await asyncio.sleep(self.cpo.delay_s)
        return call_result.Authorize(id_tag_info={"status": self.cpo.id_tags.get(id_tag, "Accepted")})

    @on(Action.start_transaction)
    async def on_start(self, id_tag: str, **_: Any):
        await asyncio.sleep(self.cpo.delay_s)
        return call_result.StartTransaction(transaction_id=next(self.cpo.tx_ids),
                                            id_tag_info={"status": self.cpo.id_tags.get(id_tag, "Accepted")})

    @on(Action.stop_transaction)
    async def on_stop(self, **_: Any):
        return call_result.StopTransaction()

    @on(Action.meter_values)
    async def on_meter_values(self, **_: Any):
        return call_result.MeterValues()

    @on(Action.data_transfer)
    async def on_data_transfer(self, **_: Any):
        return call_result.DataTransfer(status=self.cpo.data_transfer[0], data=self.cpo.data_transfer[1])

    @on(Action.diagnostics_status_notification)
    async def on_diagnostics(self, **_: Any):
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    async def on_firmware(self, **_: Any):
        return call_result.FirmwareStatusNotification()


def self_signed_tls(directory: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1 (trusted by nobody)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake CPO")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cpo.crt", directory / "cpo.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class FakeCpo:
    """A backend on a loopback port: `url` to configure, `received` to check, `call()` to command."""

    def __init__(self, *, password: str | None = None, first_tx_id: int = 1000,
                 tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.tls = tls
        self.url = f"{'wss' if tls else 'ws'}://127.0.0.1:{self.port}/ocpp"
        self.password = password
        self.received: list[tuple[str, str, dict[str, Any], float]] = []
        self.id_tags: dict[str, str] = {}
        self.reject: dict[str, int] = {}
        self.boot_status = "Accepted"
        self.boot_interval_s = 300
        self.delay_s = 0.0
        self.data_transfer: tuple[str, str | None] = ("Accepted", None)  # (status, data) it answers
        self.tx_ids = itertools.count(first_tx_id)
        self.cps: dict[str, CpoSide] = {}
        self.auth_headers: list[str | None] = []
        self._raw_ids = itertools.count(1)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._server: Any = None
        self.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> None:
        async def _start() -> Any:
            return await serve(self._handler, "127.0.0.1", self.port, subprotocols=["ocpp1.6"],
                               process_request=self._check, ssl=self.tls)

        self._server = self.run(_start())

    def stop(self) -> None:
        """The backend goes away: its listening socket and every connection."""
        async def _stop() -> None:
            self._server.close()
            await self._server.wait_closed()
            self.cps.clear()

        self.run(_stop())

    def close(self) -> None:
        if self.thread.is_alive():
            try:
                self.stop()
            except Exception:  # noqa: BLE001 - closed already
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        header = request.headers.get("Authorization")
        self.auth_headers.append(header)
        if self.password is None:
            return None
        identity = request.path.rsplit("/", 1)[-1]
        expected = "Basic " + base64.b64encode(f"{identity}:{self.password}".encode()).decode()
        if header != expected:
            return Response(401, "Unauthorized", Headers([("WWW-Authenticate", 'Basic realm="ocpp"')]), b"")
        return None

    async def _handler(self, connection: ServerConnection) -> None:
        cp_id = connection.request.path.rsplit("/", 1)[-1] if connection.request else "?"
        cp = CpoSide(cp_id, connection, self)
        self.cps[cp_id] = cp
        try:
            await cp.start()
        except Exception:  # noqa: BLE001 - the connection closed
            pass
        finally:
            if self.cps.get(cp_id) is cp:
                del self.cps[cp_id]

    def call(self, cp_id: str, payload: Any) -> Any:
        return self.run(self.cps[cp_id].call(payload, suppress=False))

    def raw_call(self, cp_id: str, action: str, payload: dict[str, Any]) -> Any:
        """Send any CALL, even one the library would not; the CallResult or CallError that answers it."""
        async def _call() -> Any:
            cp = self.cps[cp_id]
            unique_id = str(next(self._raw_ids))
            await cp._send(json.dumps([2, unique_id, action, payload]))
            return await cp._get_specific_response(unique_id, 10)

        return self.run(_call())

    def raw_calls_at_once(self, cp_id: str, calls: list[tuple[str, dict[str, Any]]], timeout: float = 15) -> list[Any]:
        """Send several CALLs without waiting (breaking OCPP-J's one at a time); every answer, by call."""
        async def _calls() -> list[Any]:
            cp = self.cps[cp_id]
            ids = [str(next(self._raw_ids)) for _ in calls]
            for unique_id, (action, payload) in zip(ids, calls, strict=True):
                await cp._send(json.dumps([2, unique_id, action, payload]))
            answers = {}
            while len(answers) < len(ids):
                answer = await asyncio.wait_for(cp._response_queue.get(), timeout)
                answers[answer.unique_id] = answer
            return [answers[unique_id] for unique_id in ids]

        return self.run(_calls(), timeout + 5)

    def actions(self, cp_id: str | None = None) -> list[str]:
        return [action for who, action, _, _ in list(self.received) if cp_id is None or who == cp_id]

    def payloads(self, action: str) -> list[dict[str, Any]]:
        return [payload for _, name, payload, _ in list(self.received) if name == action]
