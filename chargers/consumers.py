"""The OCPP-J 1.6 websocket at /ocpp/<charge_point_id>: frame I/O, nothing else.

Frames are handled one at a time, in arrival order (Channels dispatches a consumer's
messages sequentially), which is what keeps replayed offline messages in order. Calls
to the charger run as separate asyncio tasks: awaiting a charger's answer inside the
receive handler would block the very frame that carries the answer.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import quote

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull, StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.utils import await_many_dispatch
from django.conf import settings
from ocpp.exceptions import OCPPError

try:  # what Daphne's websocket protocol raises on a send after the socket has closed
    from autobahn.exception import Disconnected as SocketClosed
except ImportError:  # pragma: no cover - another ASGI server: its own error reaches the caller, as before

    class SocketClosed(Exception):  # type: ignore[no-redef]
        """Never raised."""


from chargers import services
from chargers.batcher import Batcher
from chargers.bootqueue import DeferredBootSteps, StormState
from chargers.commands import ChargerCallError, ChargerOffline, ChargerTimeout, reply_to_result
from chargers.frames import (
    CALL,
    CALLERROR,
    CALLRESULT,
    EVERY_ACTION,
    Frame,
    FrameProblem,
    parse_frame,
    respell_error_code,
)
from chargers.hooks import (
    BOOT_ACCEPTED_STEPS,
    CALL_OUTCOME_HOOKS,
    INLINE_OUTCOME_HOOKS,
    RELAY_OPENERS,
    URGENT_BOOT_STEPS,
    BootStep,
    ChargerRelay,
)
from chargers.identity import BadIdentity, identity_from_path, printable
from chargers.inbox import process_inbox, process_key_of
from chargers.loops import PerLoop
from chargers.models import Direction, RegistrationStatus
from chargers.protocol import CentralSystemChargePoint, call_error_exception
from chargers.ratelimit import RateLimiter, ThrottledLog
from chargers.schemas import compile_all, schema_problem
from chargers.writebuffer import LogRow, write_buffer
from evce import clock

logger = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"
CLOSE_REPLACED = 4000
# Application close codes (autobahn allows 1000 or 3000-4999 from a server).
# No ocpp1.6 subprotocol offered: OCPP-J §3.2 completes the handshake without a
# Sec-WebSocket-Protocol header, then closes at once.
CLOSE_NO_SUBPROTOCOL = 4001
CLOSE_PROTOCOL_ERROR = 4002
CLOSE_UNSUPPORTED_DATA = 4003
# The consumer failed unexpectedly: closed after marking the charger offline. Not RFC 6455's
# 1011, which autobahn refuses from an application (the close itself then failed).
CLOSE_INTERNAL_ERROR = 4011
_TYPE_NAMES = {2: "CALL", 3: "CALLRESULT", 4: "CALLERROR"}
# A charger accepted at its boot is re-checked this often (in the background, see `_may_call`;
# and at every StartTransaction and Authorize), so that one rejected while connected stops
# being served.
ACCEPTANCE_RECHECK_S = 10.0

# Failed logins, counted per charge point id and per client address in this process.
# Once over the limit a handshake is refused before any password hashing.
_login_failures_by_id = RateLimiter(limit=settings.OCPP_LOGIN_FAILURES_PER_ID, window_s=60.0)
_login_failures_by_address = RateLimiter(limit=settings.OCPP_LOGIN_FAILURES_PER_ADDRESS, window_s=60.0)
# Unknown ids registered (OCPP_UNKNOWN_CHARGERS accept/pending) per client address and minute.
_registrations_by_address = RateLimiter(limit=settings.OCPP_REGISTRATIONS_PER_ADDRESS, window_s=60.0)
_throttled = ThrottledLog(logger)

# Every OCPP 1.6 schema this endpoint checks, compiled now rather than on a charger's frame.
compile_all(EVERY_ACTION)


class TransactionEnded(Exception):
    """A TxProfile for a transaction the charger already reported stopped (OCPP 1.6 §5.16.2)."""


class _Wire:
    """What the `ocpp` ChargePoint writes to: respells 1.6 error codes, logs, sends."""

    __slots__ = ("_consumer",)  # one per connected charger

    def __init__(self, consumer: OcppConsumer) -> None:
        self._consumer = consumer

    async def send(self, message: str) -> None:
        await self.send_frame(message, json.loads(message))

    async def send_frame(self, message: str, frame: list[Any]) -> None:
        """Send `message`, the text of `frame` (JSON values only, as the ChargePoint built it)."""
        if frame[0] == CALL and self._consumer.ended_transaction_profile(frame):
            raise TransactionEnded("the transaction of this TxProfile has ended: not sent")
        if frame[0] == CALLERROR:
            frame[2] = respell_error_code(frame[2])
            message = json.dumps(frame, separators=(",", ":"), default=str)
            if self._consumer.relayed_requests:
                self._consumer.relayed_requests.pop(str(frame[1]), None)
        elif frame[0] == CALLRESULT and self._consumer.relayed_requests:
            relayed = await self._consumer.relay_answer(frame)
            if relayed is not frame:
                frame, message = relayed, json.dumps(relayed, separators=(",", ":"), default=str)
        await self._consumer.log_frame(Direction.OUT, frame)
        await self._consumer.send(text_data=message)


class OcppConsumer(AsyncWebsocketConsumer):
    # One consumer per connected charger, so what each holds counts thousands of times: its
    # attributes live in slots, not in an instance dict of ~20 keys (~1.3 KB a charger,
    # tracemalloc), and the containers most connections never use (tasks, ended transactions,
    # relays) are made at their first use. Channels' base classes have no slots: the few
    # attributes they set themselves (`groups`) stay in the dict they bring.
    __slots__ = ("charge_point_id", "charger_pk", "cp", "relayed_requests", "_tasks", "_ended_transactions",
                 "_accepted", "_accepted_checked_at", "_unsolicited", "_last_seen_at", "_relays",
                 "_layer_receive", "scope", "channel_layer", "channel_name", "base_send")
    charge_point_id: str
    charger_pk: int | None
    cp: CentralSystemChargePoint | None
    # Charger CALLs (action, payload) by message id, until answered: told to the relays (when any).
    relayed_requests: dict[str, tuple[str, dict[str, Any]]] | None
    _tasks: list[asyncio.Task[None]] | None
    # Transactions this charger reported stopped on this connection: no TxProfile for them.
    _ended_transactions: set[object] | None
    _relays: list[ChargerRelay] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.charge_point_id = ""  # set in connect(); the channel-layer receive may fail before
        self.charger_pk = None
        self.cp = None
        self.relayed_requests = None
        self._tasks = None
        self._ended_transactions = None
        self._relays = None
        self._accepted = False
        self._accepted_checked_at = 0.0
        self._unsolicited = 0
        self._last_seen_at = -services.LAST_SEEN_RESOLUTION_S  # when this connection last wrote `last_seen`

    async def connect(self) -> None:
        """Admit the websocket, in the order of OCPP-J §3: identity, credentials, subprotocol.

        The password hash runs in a thread pool, never on the database thread (a slow
        hash there delays every other charger's messages); failures are rate-limited
        per id and per address before any hashing.
        """
        address = str((self.scope.get("client") or ["?"])[0])
        raw_path = self.scope.get("raw_path") or quote(self.scope["path"]).encode("ascii")
        try:
            claimed = identity_from_path(raw_path, self.scope.get("query_string") or b"")
        except BadIdentity as bad:
            _throttled.warning(("handshake", address), "refused websocket %s from %s: %s",
                               printable(raw_path.decode("ascii", "replace")), address, bad)
            await self.close()
            return
        self.charge_point_id = claimed
        if not (_login_failures_by_id.allowed(claimed.casefold()) and _login_failures_by_address.allowed(address)):
            await self._refuse(f"too many failed logins from {address} or for this id; retry in a minute",
                               address=address, record=False)
            return
        if SUBPROTOCOL not in self.scope.get("subprotocols", []):
            await self.accept()  # without a Sec-WebSocket-Protocol header (OCPP-J §3.2)
            _throttled.warning(("handshake", address), "closed websocket for %s from %s: no ocpp1.6 subprotocol",
                               printable(claimed), address)
            await self.close(code=CLOSE_NO_SUBPROTOCOL)
            return
        credentials = services.parse_basic_auth(dict(self.scope.get("headers", [])).get(b"authorization"))
        # Identified and, when the credentials need no hashing, recorded as its charger's connection.
        admitted = await admissions().submit(services.AdmissionRequest(
            claimed, credentials, self.channel_name, clock.now(),
            may_register=_registrations_by_address.allowed(address)))
        if isinstance(admitted, services.ConnectionRefused):
            await self._refuse(f"{admitted.reason} ({address})", address=address)
            return
        who = admitted.identity
        if who.registered:
            _registrations_by_address.hit(address)
        self.charge_point_id = who.charge_point_id
        password_ok = admitted.password_ok
        if password_ok is None:  # a password to hash: in a thread pool
            password_ok = await sync_to_async(services.charger_password_ok, thread_sensitive=False)(
                identity=who, credentials=credentials)
        if not password_ok:
            _login_failures_by_id.hit(claimed.casefold())
            _login_failures_by_address.hit(address)
            # Daphne answers any refused handshake with 403 and cannot add a
            # WWW-Authenticate header (no ASGI denial-response support in 4.2).
            await self._refuse(f"bad or missing HTTP Basic credentials from {address}", address=address)
            return
        _login_failures_by_id.reset(claimed.casefold())
        grant = admitted.grant or await connections_recorded().submit(services.ConnectionRecord(
            charger_pk=who.charger_pk, channel_name=self.channel_name, now=clock.now()))
        self.charger_pk = grant.charger_pk
        self._last_seen_at = time.monotonic()  # the connection's record set `last_seen`
        # Read moments ago by the handshake's identification: the acceptance check starts from it.
        self._registration_seen(who.registration_status == RegistrationStatus.ACCEPTED)
        if grant.replaced_channel and grant.replaced_channel != self.channel_name:
            await self._close_replaced(grant.replaced_channel)
        self.cp = CentralSystemChargePoint(
            self.charge_point_id,
            _Wire(self),
            charger_pk=grant.charger_pk,
            response_timeout=settings.OCPP_CALL_TIMEOUT,
            on_boot_accepted=self._after_boot_accepted,
            on_registration=self._registration_seen,
        )
        await self.accept(subprotocol=SUBPROTOCOL)
        await self.log_event("connected" + (" (replaced an older connection)" if grant.replaced_channel else ""))
        await self._open_relays()

    async def _close_replaced(self, channel: str) -> None:
        """Tell the connection this one replaces to close: here directly when it is one of this
        process's, else through the channel layer, unless that process is gone (its liveness key
        expired, `ProcessInbox.process_alive`: after a restart every charger of the dead process
        reconnects, and its notices went to an inbox nobody reads). A process whose inbox is full
        all the same (alive but not reading) is said once a minute, not once per charger, and not
        sent to again for FULL_INBOX_PAUSE_S: each send was a Redis round trip answered
        ChannelFull. The old socket then closes when it times out, as it would after a failed send."""
        inbox = process_inbox()
        if inbox is not None and inbox.owns(channel):
            inbox.deliver(channel, {"type": "ocpp.replaced"})
            return
        process_key = process_key_of(channel)
        if _full_inboxes.get(process_key, 0.0) > time.monotonic():
            return
        if inbox is not None and not await inbox.process_alive(process_key):
            return  # that process is gone (restarted), and its connections with it
        try:
            async with _replaced_sends():
                await self.channel_layer.send(channel, {"type": "ocpp.replaced"})
        except Exception as error:  # noqa: BLE001 - Redis down: the old socket times out on its own
            if isinstance(error, ChannelFull):
                _pause_sends_to(process_key)
            _throttled.warning(("replaced", process_key),
                               "%s: could not tell the replaced connection %s to close: %s", self.charge_point_id,
                               channel, type(error).__name__ if not str(error) else error)

    async def _refuse(self, reason: str, *, address: str, record: bool = True) -> None:
        # Throttled per address: a script cycling through invented ids gets a few lines a minute.
        _throttled.warning(("refused", address), "refused websocket for %s: %s", printable(self.charge_point_id),
                           reason)
        if record:
            await self.log_event("connection refused", error=reason)
        await self.close()

    async def disconnect(self, code: int) -> None:
        global _booting
        for task in list(self._tasks or ()):
            task.cancel()
        if deferred_boot_steps().drop(self):
            _booting -= 1
        await self._close_relays()
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
        assert self.cp is not None  # noqa: S101 - set in connect() before accept
        if frame.message_type != CALL and not self.cp.awaits(frame.unique_id):
            await self._drop_unsolicited(frame)
            return
        await self.log_frame(Direction.IN, frame.message)
        if frame.message_type == CALL and not await self._may_call(frame):
            problem = FrameProblem(frame.unique_id, "SecurityError", "Charge point is not accepted")
            await self._send_error(problem)
            return
        if frame.message_type == CALL and frame.action == "StopTransaction" and isinstance(frame.payload, dict):
            # Before the answer goes out: from now on no TxProfile for it reaches the wire.
            if self._ended_transactions is None:
                self._ended_transactions = set()
            self._ended_transactions.add(frame.payload.get("transactionId"))
        if frame.message_type == CALL and self._relays and isinstance(frame.payload, dict):
            if self.relayed_requests is None:
                self.relayed_requests = {}
            self.relayed_requests[frame.unique_id] = (str(frame.action), frame.payload)
        try:
            await self.cp.route(frame.message_type, frame.unique_id, frame.action, frame.message)
        finally:
            self.cp.use_charger_row(None)  # read for this frame only

    async def _reject_frame(self, text: str, problem: FrameProblem) -> None:
        _throttled.warning(("frame", self.charge_point_id), "%s: refused frame: %s: %s", self.charge_point_id,
                           problem.code, problem.description[:120])
        await self.log_event("bad frame", error=f"{problem.code}: {problem.description}", payload=text[:2000])
        if problem.unique_id is None:
            await self.close(code=CLOSE_PROTOCOL_ERROR)
            return
        if not problem.answerable:
            return  # a bad CALLRESULT/CALLERROR: logged, never answered (a CALLERROR answers a CALL)
        await self._send_error(problem)

    async def _drop_unsolicited(self, frame: Frame) -> None:
        """A CALLRESULT/CALLERROR for no CALL we are waiting on: dropped (OCPP-J §4.1.4
        ties an answer to our CALL's id), logged for the first one of the connection."""
        self._unsolicited += 1
        if self._unsolicited == 1:
            await self.log_event("answer to no outstanding call dropped", error=f"message id {frame.unique_id}",
                                 payload=frame.message)
            _throttled.warning(("unsolicited", self.charge_point_id), "%s: dropped answer(s) to no outstanding call",
                               self.charge_point_id)

    async def _send_error(self, problem: FrameProblem) -> None:
        await self.log_frame(Direction.OUT, json.loads(problem.call_error()))
        await self.send(text_data=problem.call_error())

    async def _may_call(self, frame: Frame) -> bool:
        """Before acceptance only BootNotification is answered (OCPP-J errata §3.10).

        Acceptance is read again at every StartTransaction and Authorize, and every
        ACCEPTANCE_RECHECK_S otherwise, so that a charger rejected while connected stops being
        served. An accepted charger's periodic re-read runs beside the frame that found it due
        (that frame is served; those after the re-read follow its result): waiting for it put a
        hop to the database thread, queued behind the write batches, on the path of every
        other MeterValues at a 5 s period. That was the tail of the answers: bench_scale,
        PostgreSQL, 5,000 chargers, 1,000 MeterValues/s, a 30 s window: p95 31-33 ms and p99
        55-56 ms against the bare server's 7.5 and 17.3. A charger not accepted still waits for
        its re-read (one accepted meanwhile is served at its next frame).
        """
        if frame.action == "BootNotification":
            return True
        assert self.charger_pk is not None  # noqa: S101 - set in connect() before accept
        assert self.cp is not None  # noqa: S101
        if frame.action == "StartTransaction":
            return True  # its charger's row is read with the start (`protocol.starts_with_their_chargers`)
        if frame.action == "Authorize":
            # The handler needs the whole row: read with other chargers' rows, and used by it.
            charger = await charger_rows().submit(self.charger_pk)
            self.cp.use_charger_row(charger if charger.is_accepted else None)
            self._registration_seen(charger.is_accepted)
            return self._accepted
        if self._accepted:
            now = time.monotonic()
            if now - self._accepted_checked_at >= ACCEPTANCE_RECHECK_S:
                self._accepted_checked_at = now  # one re-read at a time
                self._spawn(self._recheck_acceptance(started_at=now))
            return True
        self._registration_seen(await acceptance_checks().submit(self.charger_pk))
        return self._accepted

    async def _recheck_acceptance(self, *, started_at: float) -> None:
        """Re-read whether the charger is still accepted (the frames after it follow the answer);
        a failed read leaves it as it was until the next re-check is due. A newer fact (the
        operator's notice, a StartTransaction's read) that arrived while the read ran wins over it."""
        assert self.charger_pk is not None  # noqa: S101
        try:
            accepted = await acceptance_checks().submit(self.charger_pk)
        except Exception:  # the database is unreachable: the next re-check retries
            logger.warning("%s: re-reading the charger's acceptance failed", self.charge_point_id, exc_info=True)
            return
        if self._accepted_checked_at == started_at:
            self._registration_seen(accepted)

    def _registration_seen(self, accepted: bool) -> None:
        """Whether the charger is accepted, as just read from the database or told by the operator."""
        self._accepted = accepted
        self._accepted_checked_at = time.monotonic()

    # --- relays (chargers.hooks.RELAY_OPENERS: the upstream CPO proxy) ----------------------

    async def _open_relays(self) -> None:
        assert self.charger_pk is not None  # noqa: S101 - set in connect() before accept
        for opener in RELAY_OPENERS:
            try:
                relay = await opener(self.charger_pk, self.charge_point_id, self._relay_call)
            except Exception:  # a relay's failure must never reach the charger's link
                logger.exception("%s: relay opener %s failed", self.charge_point_id, opener)
                continue
            if relay is not None:
                self._relays = [*(self._relays or ()), relay]

    async def _relay_call(self, action: str, payload: dict[str, Any], timeout_s: float | None) -> dict[str, Any]:
        return await self.call_action_reply(action, payload, timeout_s=timeout_s)

    async def _close_relays(self) -> None:
        relays, self._relays, self.relayed_requests = self._relays or [], None, None
        for relay in relays:
            try:
                await relay.close()
            except Exception:
                logger.exception("%s: closing a relay failed", self.charge_point_id)

    async def relay_answer(self, frame: list[Any]) -> list[Any]:
        """Tell the relays of the CALLRESULT `frame` about to answer a charger CALL; one may replace it."""
        request = self.relayed_requests.pop(str(frame[1]), None) if self.relayed_requests else None
        if request is None or len(frame) < 3 or not isinstance(frame[2], dict):
            return frame
        action, payload = request
        answer = frame[2]
        for relay in list(self._relays or ()):
            try:
                replaced = await relay.answered(action, payload, answer)
            except Exception:
                logger.exception("%s: relay failed on %s", self.charge_point_id, action)
                continue
            if replaced is not None:
                answer = replaced
        return frame if answer is frame[2] else [frame[0], frame[1], answer]

    # --- resilience ----------------------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Never leave a charger "connected" behind a crashed consumer.

        An exception escaping a handler makes Daphne close with 1011 without calling
        disconnect(): the row would stay connected and server calls would wait for a
        timeout. Here the socket is closed and the charger marked offline first.
        """
        try:
            await self._dispatch(message)
        except (StopConsumer, asyncio.CancelledError):
            raise
        except SocketClosed:
            # An answer to the charger found its websocket closed: it went away while its
            # frame was handled. Not a failure of ours; the server's disconnect comes next.
            logger.info("%s: websocket closed before the answer to its frame was sent", self.charge_point_id)
        except Exception:
            logger.error("%s: consumer failed on %s; closing", self.charge_point_id or "?", message.get("type"),
                         exc_info=True)
            try:
                await self.close(code=CLOSE_INTERNAL_ERROR)
            finally:
                await self.disconnect(CLOSE_INTERNAL_ERROR)
            raise StopConsumer from None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' consumer loop, with the process's shared inbox (chargers.inbox) as this
        consumer's channel-layer receive when the layer is channels-redis's core layer: the
        inbox puts this consumer's messages into its ASGI receive queue when it has one, so
        it awaits one receive and no task of its own."""
        inbox = process_inbox()
        if inbox is None:
            await super().__call__(scope, receive, send)
            return
        self.scope = scope
        self.channel_layer = inbox.layer
        self.channel_name = await inbox.new_channel()
        self.base_send = send
        queue = getattr(receive, "__self__", None)  # Daphne's receive is its input queue's `get`
        try:
            if isinstance(queue, asyncio.Queue):
                inbox.attach(self.channel_name, queue)
                while True:
                    await self.dispatch(await receive())
            else:
                await await_many_dispatch([receive, functools.partial(inbox.receive, self.channel_name)],
                                          self.dispatch)
        except StopConsumer:
            pass
        finally:
            inbox.close(self.channel_name)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its `aclose_old_connections()` before every message.

        That call hops to the single database thread for each frame, so every charger's
        frame queued behind whatever that thread was writing, even a Heartbeat that needs
        no database. Each database call here already goes through `database_sync_to_async`,
        which closes unusable or expired connections before and after it runs.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    @property
    def channel_receive(self) -> Callable[[], Awaitable[dict[str, Any]]]:
        """What Channels awaits for channel-layer messages: the layer's receive, retried.

        Channels sets this attribute to the layer's receive and lets its exception end
        the consumer: with Redis down every charger's websocket closed (1011) and new
        handshakes got 500. A charger's own messages need only the database, so a
        failing layer is retried with back-off instead; only server→charger calls wait.
        """
        return self._receive_from_layer

    @channel_receive.setter
    def channel_receive(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._layer_receive = receive

    async def _receive_from_layer(self) -> dict[str, Any]:
        delay_s, failing = 0.5, False
        while True:
            try:
                message = await self._layer_receive()
            except Exception as error:  # noqa: BLE001 - any layer failure: retry, never close the charger
                if not failing:
                    _throttled.warning(("layer", self.charge_point_id), "%s: channel layer unavailable (%s); "
                                       "server calls to this charger wait until it is back",
                                       self.charge_point_id or "?", type(error).__name__)
                failing = True
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
                continue
            if failing:
                logger.info("%s: channel layer back", self.charge_point_id)
            return message

    # --- server-initiated calls --------------------------------------------------------

    async def ocpp_call(self, event: dict[str, Any]) -> None:
        """Channel-layer request from `send_call`: run it beside the receive loop."""
        self._spawn(self._answer_call(event))

    async def _answer_call(self, event: dict[str, Any]) -> None:
        """Run one call and report its outcome: to the waiting caller (`reply_to`), and/or to an
        outcome hook (`outcome_hook`: the control loop records answers as they arrive, nobody
        waits). A disconnect answers at once with "closed", never leaving a caller waiting."""
        try:
            reply = await self.call_action_reply(event["action"], event["payload"], timeout_s=event.get("timeout"))
        except asyncio.CancelledError:
            await self._report_outcome(event, {"status": "closed"})
            raise
        await self._report_outcome(event, reply)

    async def _report_outcome(self, event: dict[str, Any], reply: dict[str, Any]) -> None:
        if event.get("reply_to"):
            try:
                await self.channel_layer.send(event["reply_to"], {"type": "ocpp.reply", **reply})
            except Exception:  # the caller gave up or the layer is down: nothing more to do
                logger.warning("%s: could not deliver the outcome of %s", self.charge_point_id, event.get("action"))
        name = str(event.get("outcome_hook") or "")
        hook = CALL_OUTCOME_HOOKS.get(name)
        if hook is not None and self.charger_pk is not None:
            try:
                if name in INLINE_OUTCOME_HOOKS:  # returns at once: no thread hop (chargers.hooks)
                    hook(self.charger_pk, dict(event.get("context") or {}), reply)
                else:
                    await database_sync_to_async(hook, thread_sensitive=False)(
                        self.charger_pk, dict(event.get("context") or {}), reply)
            except Exception:  # a hook's failure must never reach the charger's link
                logger.exception("%s: outcome hook %s failed", self.charge_point_id, event.get("outcome_hook"))

    def ended_transaction_profile(self, frame: list[Any]) -> bool:
        """Whether a CALL is a SetChargingProfile TxProfile for a transaction that has ended."""
        if len(frame) < 4 or frame[2] != "SetChargingProfile" or not isinstance(frame[3], dict):
            return False
        profile = frame[3].get("csChargingProfiles") or {}
        return (profile.get("chargingProfilePurpose") == "TxProfile"
                and self._ended_transactions is not None
                and profile.get("transactionId") in self._ended_transactions)

    async def call_action_reply(
        self, action: str, payload: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Send one CALL over this websocket and describe the outcome as a reply message.

        The camelCase payload goes out as it is and the answer comes back as it came, both
        schema-checked (`request`), without the library's dataclass round trip (~90 µs a call:
        a limit cut on 5,000 chargers makes 10,000 calls in one process).
        """
        if self.cp is None:
            return {"status": "closed"}
        try:
            problem = schema_problem(CALL, action, payload)
        except FileNotFoundError:
            return {"status": "failed", "description": f"{action} is not an OCPP 1.6 action"}
        if problem is not None:
            return {"status": "failed", "description": f"bad {action} payload: {problem.description}"}
        try:
            # A timeout scope, not wait_for: no task of its own for each call in flight.
            async with asyncio.timeout(timeout_s or settings.OCPP_CALL_TIMEOUT):
                message = await self.cp.request(action, payload)
        except OCPPError as error:  # the answer broke its schema
            return {"status": "error", "code": respell_error_code(error.code),
                    "description": error.description, "details": _jsonable(error.details)}
        except TimeoutError:
            return {"status": "timeout"}
        except TransactionEnded as ended:
            return {"status": "failed", "description": str(ended)}
        except SocketClosed:  # the charger went away before the call was on the wire: it is offline
            return {"status": "closed"}
        if message[0] == CALLERROR:
            refused = call_error_exception(message)
            return {"status": "error", "code": respell_error_code(refused.code),
                    "description": refused.description, "details": _jsonable(refused.details)}
        answer = message[2] if len(message) > 2 else None
        return {"status": "ok", "payload": dict(answer) if isinstance(answer, dict) else {}}

    async def call_action(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Same-process call, raising like `send_call` does (used by boot steps)."""
        return reply_to_result(self.charge_point_id, action, await self.call_action_reply(action, payload))

    async def _after_boot_accepted(self) -> None:
        self._accepted = True
        self._spawn(self._run_boot_steps())

    async def _run_boot_steps(self) -> None:
        """The urgent boot steps (safety) at once; the others queued (chargers.bootqueue) until a
        storm's boots stop and a jitter that grows with the chargers booting in this process."""
        global _booting, _last_boot_at
        _booting += 1
        _last_boot_at = time.monotonic()
        queued = False
        try:
            await self._run_steps(_boot_steps(urgent=True))
            if _boot_steps(urgent=False):
                # Queued, it counts as booting until its steps are done (a second boot while it
                # waits is not queued twice, nor counted).
                queued = deferred_boot_steps().add(self)
        finally:
            if not queued:
                _booting -= 1

    def _start_deferred_steps(self) -> None:
        """Called by the queue when this charger's configuration steps may go."""
        task = self._spawn(self._run_steps(_boot_steps(urgent=False)))
        task.add_done_callback(_boot_done)  # even when cancelled before it began

    async def _run_steps(self, steps: list[BootStep]) -> None:
        assert self.charger_pk is not None  # noqa: S101
        for step in steps:
            try:
                await step(self.call_action, self.charger_pk)
            except (ChargerCallError, ChargerOffline, ChargerTimeout) as error:
                await self.log_event(f"boot step {step.__name__} failed", error=str(error))
            except Exception:  # one failing step must not stop the others
                logger.exception("boot step %s failed for %s", step.__name__, self.charge_point_id)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        if self._tasks is None:
            self._tasks = []
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)
        return task

    async def ocpp_registration(self, event: dict[str, Any]) -> None:
        """The operator accepted, rejected or set back to pending this charger
        (chargers.commands.tell_registration): it applies from the next frame."""
        self._registration_seen(bool(event.get("accepted")))
        await self.log_event("registration changed: " + ("accepted" if event.get("accepted") else "not accepted"))

    async def ocpp_replaced(self, event: dict[str, Any]) -> None:
        await self.log_event("closing: replaced by a new connection")
        await self.close(code=CLOSE_REPLACED)

    # --- maintenance log ---------------------------------------------------------------

    async def log_frame(self, direction: str, frame: list[Any]) -> None:
        """Log one frame as the array it is (a CALLRESULT keeps its payload, a CALLERROR
        its code, description and details). A frame holds JSON values only (decoded from
        the wire, or built to be sent) and is not changed afterwards: logged as it is."""
        action, payload, error = _frame_parts(frame)
        row = LogRow(
            charge_point_id=self.charge_point_id, charger_pk=self.charger_pk, direction=direction,
            now=clock.now(), message_type=_TYPE_NAMES.get(frame[0], "?"), unique_id=str(frame[1]), action=action,
            payload=payload, error=error, touch=direction == Direction.IN and self._last_seen_due(),
        )
        # Rows of a charger's CALL and of our answer to it are not waited for: the answer
        # waits only for what it reports (e.g. the samples stored), and these rows are
        # written with the next batch (see chargers.writebuffer for what a crash loses).
        # Nor are the rows of our calls and of the charger's answers to them: the caller waits
        # for both once the answer is in (CentralSystemChargePoint.request), so a call goes on
        # the wire without waiting for a commit and the charger's next frames are not held up.
        # Only a CALLERROR we answer is written first (a refused frame is on record).
        waited = direction == Direction.OUT and frame[0] == CALLERROR
        await write_buffer().submit(row, wait=waited)

    def _last_seen_due(self) -> bool:
        """Whether a frame heard now updates the charger's `last_seen`: not within
        LAST_SEEN_RESOLUTION_S of the last update (the connection's own record counts as one).

        Why: every frame's touch was an UPDATE of the charger's row in the next write batch. A
        charger sending MeterValues every second, as the benchmark's 1,000 do, cost a row update
        per second for a figure read by the offline check, which allows for the lag, and by
        screens, where 10 s are nothing."""
        now = time.monotonic()
        if now - self._last_seen_at < services.LAST_SEEN_RESOLUTION_S:
            return False
        self._last_seen_at = now
        return True

    async def log_event(self, what: str, *, error: str = "", payload: object = None) -> None:
        await write_buffer().submit(LogRow(
            charge_point_id=self.charge_point_id, charger_pk=self.charger_pk, direction=Direction.EVENT,
            now=clock.now(), message_type="EVENT", action=what, payload=payload, error=error,
        ))


# Chargers of this process running their boot steps now, and when the last one began.
_booting = 0
_last_boot_at = 0.0

# Process keys (`specific.<prefix>!`) whose inbox was found full, and until when none is sent there.
FULL_INBOX_PAUSE_S = 10.0
_full_inboxes: dict[str, float] = {}


def _pause_sends_to(process_key: str) -> None:
    now = time.monotonic()
    for key in [key for key, until in _full_inboxes.items() if until <= now]:
        del _full_inboxes[key]  # processes restarted long ago
    _full_inboxes[process_key] = now + FULL_INBOX_PAUSE_S


# "Close, you are replaced" messages in flight, per event loop. After a restart of a process
# whose chargers were not marked offline (several Daphne processes share the database) every
# reconnecting charger replaces a connection: sent all at once, each would take a new Redis
# connection from the layer's pool (~1 ms of CPU each, 11 % of a 1,000-charger storm).
_REPLACED_SENDS_IN_FLIGHT = 16
_replaced_sends = PerLoop(lambda: asyncio.Semaphore(_REPLACED_SENDS_IN_FLIGHT))
# Every connection re-reads its charger's acceptance each ACCEPTANCE_RECHECK_S: at 500 chargers a
# process that was 50 hops to the database thread a second, each between two write batches.
acceptance_checks = PerLoop(lambda: Batcher(services.chargers_accepted_many, max_batch=1000,
                                            name="acceptance re-checks"))
# The rows of the chargers whose StartTransaction or Authorize arrive at the same time.
charger_rows = PerLoop(lambda: Batcher(services.chargers_rows_many, max_batch=500, name="reading chargers"))
# The handshakes arriving at the same time find (or register) their chargers and, unless a
# password is to be hashed, take them over, in one step.
admissions = PerLoop(lambda: Batcher(services.chargers_admitted_many, max_batch=500, name="admitting chargers"))
# The websockets whose password was hashed take over their chargers in one transaction.
connections_recorded = PerLoop(lambda: Batcher(services.chargers_connected_many, max_batch=500,
                                               name="recording connections"))

def _boot_steps(*, urgent: bool) -> list[BootStep]:
    """The registered boot steps that run at once (`urgent`, safety) or wait (configuration)."""
    return [step for step in BOOT_ACCEPTED_STEPS if (step in URGENT_BOOT_STEPS) == urgent]


def _boot_done(_: object) -> None:
    global _booting
    _booting -= 1


# The chargers of this process waiting for their configuration steps (see chargers.bootqueue).
deferred_boot_steps = PerLoop(lambda: DeferredBootSteps(OcppConsumer._start_deferred_steps, StormState(
    booting=lambda: _booting, last_boot_at=lambda: _last_boot_at,
    quiet_s=lambda: settings.OCPP_BOOT_QUIET_MS / 1000, jitter_max_s=lambda: settings.OCPP_BOOT_JITTER_MAX_S)))


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


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Websocket handshakes outside /ocpp/: refused (403) with a log line, never a 500."""

    async def connect(self) -> None:
        address = str((self.scope.get("client") or ["?"])[0])
        _throttled.warning(("handshake", address), "refused websocket %s from %s: not an OCPP endpoint",
                           printable(str(self.scope.get("path", ""))), address)
        await self.close()
