"""One upstream link at work: the OCPP 1.6J connection to a backend under a charger's identity.

Runs in the Daphne process that holds the charger's websocket, as asyncio tasks of the charger's
relay (proxy.relay), from the charger's connection to its disconnection:

1. `_pump` takes the charger's answered messages in order: transaction messages go into the
   durable queue (database) first, whatever the link's state; the others are sent live when
   the link is up and dropped when it is not (the statuses are replayed at the next connect).
2. `run` connects with back-off (1 s doubling to 300 s, ±50 % jitter), replays the charger's
   BootNotification (again until the backend accepts it) and a StatusNotification per connector,
   then `_send_loop` drains the queue in order and the live messages, one CALL at a time.
3. A queued message the backend refuses or does not answer is retried after the retry interval ×
   its attempts, and dropped with a log line after `transaction_message_attempts`. A Stop or
   MeterValues of a transaction whose Start the backend never answered is never sent with a
   made-up id: it waits behind its Start in the queue, and is dropped (logged) if the Start was.

Nothing here is awaited by the charger's own handling, except the primary's answer to Authorize
and StartTransaction (see proxy.relay), and that is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import logging
import random
import socket
import ssl
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import websockets
from channels.db import database_sync_to_async
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, MessageType, unpack
from ocpp.v16 import ChargePoint
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from chargers.models import Direction
from chargers.writebuffer import LogRow, write_buffer
from evce import clock
from proxy import services
from proxy.services import LinkConfig

if TYPE_CHECKING:
    from proxy.relay import UpstreamRelay

logger = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
LIVE_MAX = 1000  # non-transaction messages waiting while a queue drains; the oldest are dropped
BATCH = 50


def backoff_s(failures: int, rng: Callable[[], float] = random.random) -> float:
    """Delay before reconnect attempt `failures` + 1: 1 s doubling to 300 s, then ±50 % jitter."""
    base = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(failures, 20))
    return base * (0.5 + rng())


def describe_connect_error(error: BaseException) -> str:
    """One clear line for the link's status."""
    if isinstance(error, InvalidStatus):
        code = error.response.status_code
        if code == 401:
            return "HTTP 401: the backend refused the credentials (check the password)"
        if code == 403:
            return "HTTP 403: the backend refused this charger (identity or credentials)"
        if code == 404:
            return "HTTP 404: the backend does not know this charger identity or path"
        return f"HTTP {code}: the backend refused the websocket"
    if isinstance(error, InvalidURI):
        return f"invalid URL: {error}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"TLS: the backend's certificate is not trusted ({error.verify_message}); "
                "untick verify TLS only for a lab backend")
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if isinstance(error, socket.gaierror):
        return f"unknown host: {error.strerror or error} (check the URL)"
    if isinstance(error, TimeoutError):
        return "no answer from the backend (timeout)"
    if isinstance(error, InvalidHandshake):
        return f"websocket handshake failed: {error}"
    if isinstance(error, OSError):
        return f"cannot connect: {error.strerror or error}"
    return f"{type(error).__name__}: {error}"


@dataclass
class QueuedRow:
    """A queued message as the sender needs it (from the database or from memory)."""

    pk: int
    action: str
    payload: dict[str, Any]
    local_transaction_id: int | None
    next_attempt_at: dt.datetime | None = None


@dataclass
class Outgoing:
    """A charger message for this backend, with the local answer's facts it needs."""

    action: str
    payload: dict[str, Any]
    local_transaction_id: int | None = None
    transactional: bool = False
    future: asyncio.Future[dict[str, Any] | None] | None = None  # the primary's answer, for a decision


class BackendRefused(Exception):
    pass


class UpstreamChargePoint(ChargePoint):
    """The charge point side of the upstream connection (ocpp library), with raw payloads."""

    def __init__(self, identity: str, connection: Any, link: LinkRunner) -> None:
        super().__init__(identity, connection, response_timeout=int(max(1, link.config.message_timeout_s)))
        self.link = link

    async def route_message(self, raw_msg: str) -> None:
        try:
            msg = unpack(raw_msg)
        except OCPPError as error:
            logger.warning("upstream %s: unreadable frame dropped: %s", self.link.config.backend_name, error)
            return
        if msg.message_type_id == MessageType.Call:
            # Answered beside the receive loop: the charger's answer may take seconds, and our own
            # CALLs' answers must keep flowing meanwhile.
            from proxy.commands import answer_backend_call  # noqa: PLC0415 - commands imports this module

            self.link.spawn(answer_backend_call(self.link, self, msg))
        else:
            self._response_queue.put_nowait(msg)

    async def call_raw(self, action: str, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one CALL as is; its CALLRESULT payload, or the CALLERROR raised as an OCPPError."""
        request = Call(unique_id=str(self._unique_id_generator()), action=action, payload=payload)
        async with self._call_lock:
            await self._send(request.to_json())
            response = await self._get_specific_response(request.unique_id, timeout_s)
        if response.message_type_id == MessageType.CallError:
            raise response.to_exception()
        return dict(response.payload or {})

    async def send_frame(self, text: str) -> None:
        await self._send(text)


class LinkRunner:
    def __init__(self, relay: UpstreamRelay, config: LinkConfig) -> None:
        self.relay = relay
        self.config = config
        self.inbox: asyncio.Queue[Outgoing | None] = asyncio.Queue()
        self.live: deque[Outgoing] = deque(maxlen=LIVE_MAX)
        self.urgent: deque[Outgoing] = deque(maxlen=LIVE_MAX)
        self.wake = asyncio.Event()
        self.maybe_queued = True
        # The queue's rows as known in memory, in order: complete when no row of this link is in the
        # database that is not here too (saves a read per message while the backend keeps up).
        self.known: deque[QueuedRow] = deque()
        self.known_complete = False
        self.last_known_pk = 0
        self.inserted = 0
        self.sent_pks: list[int] = []  # sent, deleted in one statement per batch
        self.command_lock = asyncio.Lock()  # the backend's commands reach the charger one at a time
        self.commands_waiting = 0
        self.connected = False
        self.was_up = False
        self.cp: UpstreamChargePoint | None = None
        self.tx_map: dict[int, int] = {}
        self.waiters: dict[int, asyncio.Future[dict[str, Any] | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._main: asyncio.Task[None] | None = None
        self._pumping: asyncio.Task[None] | None = None

    # --- life ------------------------------------------------------------------------------

    def start(self) -> None:
        self._pumping = asyncio.ensure_future(self._pump())
        self._main = asyncio.ensure_future(self.run())

    async def stop(self, reason: str = "the charger disconnected") -> None:
        """At the charger's disconnect (or a change of the link): keep every transaction message
        (durably), then close."""
        self.inbox.put_nowait(None)
        if self._pumping is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._pumping, 10)
        for task in [self._main, *self._tasks]:
            if task is not None:
                task.cancel()
        if self._main is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._main, 5)
        with contextlib.suppress(Exception):
            if await database_sync_to_async(services.link_status_set)(
                    link_pk=self.config.link_pk, connected=False, now=clock.now(), error=reason):
                await self.event(f"closed: {reason}")

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def submit(self, item: Outgoing) -> None:
        self.inbox.put_nowait(item)

    # --- in: the charger's messages, in order -------------------------------------------------

    async def _pump(self) -> None:
        while True:
            item = await self.inbox.get()
            if item is None:
                return
            try:
                await self._take(item)
            except Exception:
                logger.exception("upstream %s: a %s was lost", self.config.backend_name, item.action)
                _resolve(item.future, None)

    async def _take(self, item: Outgoing) -> None:
        if item.transactional:
            row, dropped_other = await database_sync_to_async(services.enqueue)(
                link_pk=self.config.link_pk, backend_pk=self.config.backend_pk, action=item.action,
                payload=item.payload, local_transaction_id=item.local_transaction_id, now=clock.now())
            self.inserted += 1
            if dropped_other:
                self.known_complete = False
            elif row is not None and self.known_complete and row > self.last_known_pk:
                self.known.append(QueuedRow(row, item.action, item.payload, item.local_transaction_id))
                self.last_known_pk = row
            if row is None:
                await self.event(f"{item.action} dropped: queue full", error="queue bound reached")
                _resolve(item.future, None)
            elif item.future is not None:
                self.waiters[row] = item.future
            self.maybe_queued = True
            self.wake.set()
        elif self.connected:
            (self.urgent if item.future is not None else self.live).append(item)
            self.wake.set()
        else:
            _resolve(item.future, None)

    # --- out: the connection ------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        while True:
            await self.relay.wait_booted()
            self.was_up = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - every failure ends in a reconnect
                text = describe_connect_error(error)
                if await database_sync_to_async(services.link_status_set)(
                        link_pk=self.config.link_pk, connected=False, now=clock.now(), error=text):
                    await self.event("not connected", error=text)
            if self.was_up:  # it was up: the back-off starts again from 1 s
                failures = 0
            delay = backoff_s(failures)
            failures += 1
            await asyncio.sleep(delay)

    def _connect_options(self) -> dict[str, Any]:
        headers = {}
        if self.config.password:
            token = base64.b64encode(f"{self.config.identity}:{self.config.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        options: dict[str, Any] = {
            "subprotocols": ["ocpp1.6"], "additional_headers": headers, "proxy": None,
            "open_timeout": max(2.0, self.config.message_timeout_s),
            "ping_interval": self.config.ping_interval_s or None, "ping_timeout": self.config.ping_interval_s or None,
        }
        if self.config.url.startswith("wss:") and not self.config.verify_tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            options["ssl"] = context
        return options

    async def _session(self) -> None:
        """One connection: connect, boot, replay, drain until it closes."""
        async with websockets.connect(self.config.endpoint, **self._connect_options()) as ws:
            if ws.subprotocol != "ocpp1.6":
                raise BackendRefused("the backend did not accept the ocpp1.6 subprotocol")
            cp = UpstreamChargePoint(self.config.identity, ws, self)
            reader = asyncio.ensure_future(cp.start())
            try:
                await self._boot(cp, reader)
                self.tx_map = await database_sync_to_async(services.transaction_map_load)(link_pk=self.config.link_pk)
                self.cp = cp
                for payload in await database_sync_to_async(services.status_payloads)(charger_pk=self.relay.charger_pk):
                    await self._call(cp, reader, "StatusNotification", payload)
                self.connected = self.was_up = True
                self.maybe_queued = True
                self.known_complete = False
                await database_sync_to_async(services.link_status_set)(
                    link_pk=self.config.link_pk, connected=True, now=clock.now(), boot_status="Accepted")
                await self.event("connected")
                await self._send_loop(cp, reader)
            finally:
                self.connected = False
                self.cp = None
                with contextlib.suppress(Exception):
                    await self._flush_sent()
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
                for item in [*self.urgent, *self.live]:
                    _resolve(item.future, None)
                self.urgent.clear()
                self.live.clear()
            error = f"connection closed ({ws.close_code})" if ws.close_code else "connection closed"
        await database_sync_to_async(services.link_status_set)(
            link_pk=self.config.link_pk, connected=False, now=clock.now(), error=error)
        await self.event("disconnected", error=error)

    async def _boot(self, cp: UpstreamChargePoint, reader: asyncio.Future[Any]) -> None:
        """BootNotification until Accepted (a Pending/Rejected one is retried after its interval)."""
        while True:
            payload = await database_sync_to_async(services.boot_payload)(charger_pk=self.relay.charger_pk)
            answer = await self._call(cp, reader, "BootNotification", payload)
            status = str(answer.get("status", ""))
            if status == "Accepted":
                return
            await database_sync_to_async(services.link_status_set)(
                link_pk=self.config.link_pk, connected=False, now=clock.now(), boot_status=status,
                error=f"the backend answered the BootNotification with {status}")
            interval = float(answer.get("interval") or 60)
            await _first(asyncio.sleep(min(max(interval, 1.0), BACKOFF_MAX_S)), reader)
            if reader.done():
                raise ConnectionClosed(None, None)

    async def _call(self, cp: UpstreamChargePoint, reader: asyncio.Future[Any], action: str,
                    payload: dict[str, Any]) -> dict[str, Any]:
        call = asyncio.ensure_future(cp.call_raw(action, payload, self.config.message_timeout_s))
        await _first(call, reader)
        if not call.done():
            call.cancel()
            raise ConnectionClosed(None, None)
        return call.result()

    async def _send_loop(self, cp: UpstreamChargePoint, reader: asyncio.Future[Any]) -> None:
        """Urgent (a primary's decision), then the durable queue in order, then live messages."""
        while not reader.done():
            self.wake.clear()
            if self.urgent:
                await self._send_live(cp, reader, self.urgent.popleft())
                continue
            if self.maybe_queued:
                self.maybe_queued = False
                rows = await self._queue_head()
                if rows:
                    self.maybe_queued = True
                    await self._send_queued(cp, reader, rows)
                    continue
            await self._flush_sent()
            if self.live:
                await self._send_live(cp, reader, self.live.popleft())
                continue
            await _first(self.wake.wait(), reader, timeout_s=30)

    async def _queue_head(self) -> list[QueuedRow]:
        if self.known_complete:
            return list(itertools.islice(self.known, BATCH))
        await self._flush_sent()
        seen = self.inserted
        rows = [QueuedRow(row.pk, row.action, row.payload, row.local_transaction_id, row.next_attempt_at)
                for row in await database_sync_to_async(services.queue_head)(link_pk=self.config.link_pk, limit=BATCH)]
        if len(rows) < BATCH and self.inserted == seen:  # all of them, and none added meanwhile
            self.known, self.known_complete = deque(rows), True
            self.last_known_pk = max(self.last_known_pk, rows[-1].pk if rows else 0)
        return rows

    def _done(self, row: QueuedRow) -> None:
        if self.known and self.known[0].pk == row.pk:
            self.known.popleft()

    async def _flush_sent(self) -> None:
        if self.sent_pks:
            pks, self.sent_pks = self.sent_pks, []
            await database_sync_to_async(services.queued_sent)(message_pks=pks)

    async def _send_live(self, cp: UpstreamChargePoint, reader: asyncio.Future[Any], item: Outgoing) -> None:
        try:
            answer = await self._call(cp, reader, item.action, item.payload)
        except (OCPPError, TimeoutError) as error:
            logger.info("upstream %s: %s not answered: %s", self.config.backend_name, item.action, error)
            _resolve(item.future, None)
            return
        except BaseException:
            _resolve(item.future, None)
            raise
        _resolve(item.future, answer)

    async def _send_queued(self, cp: UpstreamChargePoint, reader: asyncio.Future[Any],
                           rows: list[QueuedRow]) -> None:
        for row in rows:
            if self.urgent:
                return  # a decision waits: serve it, then come back to the queue
            if row.next_attempt_at is not None and row.next_attempt_at > clock.now():
                wait_s = (row.next_attempt_at - clock.now()).total_seconds()
                await _first(asyncio.sleep(wait_s), reader)
                return
            payload = self.upstream_payload(row.action, row.payload)
            if payload is None:
                await database_sync_to_async(services.queued_drop)(message_pk=row.pk,
                                                                    backend_pk=self.config.backend_pk)
                self._done(row)
                await self.event(f"{row.action} dropped", error=f"local transaction {row.local_transaction_id} has "
                                 "no id at this backend (its StartTransaction was not answered)")
                _resolve(self.waiters.pop(row.pk, None), None)
                continue
            try:
                answer = await self._call(cp, reader, row.action, payload)
            except (OCPPError, TimeoutError) as error:
                text = f"{getattr(error, 'code', 'timeout')}: {getattr(error, 'description', '') or error}"
                self.known_complete = False  # its attempts and next attempt are in the database
                await self._flush_sent()
                dropped = await database_sync_to_async(services.queued_failed)(
                    message_pk=row.pk, error=text, attempts_max=self.config.attempts,
                    retry_interval_s=self.config.retry_interval_s, now=clock.now())
                if dropped:
                    await self.event(f"{row.action} dropped after {self.config.attempts} attempts", error=text)
                _resolve(self.waiters.pop(row.pk, None), None)
                return
            if row.action == "StartTransaction" and row.local_transaction_id is not None:
                upstream = answer.get("transactionId")
                if isinstance(upstream, int):
                    self.tx_map[row.local_transaction_id] = upstream
                    await database_sync_to_async(services.transaction_map_set)(
                        link_pk=self.config.link_pk, local_transaction_id=row.local_transaction_id,
                        upstream_transaction_id=upstream, now=clock.now())
            self.sent_pks.append(row.pk)
            self._done(row)
            _resolve(self.waiters.pop(row.pk, None), answer)

    def upstream_payload(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The charger's message with this backend's transaction id; None when it has none."""
        if action in {"StopTransaction", "MeterValues"} and payload.get("transactionId") is not None:
            upstream = self.tx_map.get(int(payload["transactionId"]))
            if upstream is None:
                return None
            return {**payload, "transactionId": upstream}
        return payload

    def local_transaction_id(self, upstream_id: int) -> int | None:
        for local, upstream in self.tx_map.items():
            if upstream == upstream_id:
                return local
        return None

    async def event(self, what: str, *, error: str = "") -> None:
        """A line in the maintenance log (the OCPP message log's events), under the charger."""
        await write_buffer().submit(LogRow(
            charge_point_id=self.relay.charge_point_id, charger_pk=self.relay.charger_pk, direction=Direction.EVENT,
            now=clock.now(), message_type="EVENT", action=f"upstream {self.config.backend_name}: {what}"[:50],
            error=error))


def _resolve(future: asyncio.Future[dict[str, Any] | None] | None, value: dict[str, Any] | None) -> None:
    if future is not None and not future.done():
        future.set_result(value)


async def _first(awaitable: Any, reader: asyncio.Future[Any], timeout_s: float | None = None) -> None:
    """Wait for `awaitable` or the connection's end, whichever comes first."""
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait({task, reader}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done() and not isinstance(awaitable, asyncio.Future):
            task.cancel()
