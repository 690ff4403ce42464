"""One channel-layer receive per process for every OCPP consumer, instead of one per consumer.

Channels gives each consumer its own `channel_layer.receive(channel)`. With channels-redis's
core layer every consumer of a process then holds a queue (four deques), two tasks and a lock
waiter while it waits, ~4.5 KB per connected charger measured with tracemalloc, and they take
turns at the one BRPOP of the process. Here the OCPP consumers of a process share one pump:

- their channel names come from a layer instance of their own (`make_backend` of the default
  layer's settings: its own client prefix, so its process key `specific.<prefix>!` is read by
  this pump and nothing else; dashboards and reply channels keep the default instance);
- the pump BRPOPs that key (`receive_single`, which keeps the layer's backup-queue cleaning) and
  hands each message to the consumer whose channel it names; messages for channels no consumer
  holds (a connection that just closed) are dropped, as their replies would be;
- under Daphne (and Channels' test communicators) a consumer's ASGI receive is an asyncio.Queue's
  `get`: the consumer attaches that queue (`attach`) and the pump puts its messages there, beside
  its websocket frames, so the consumer awaits one thing. Channels' `await_many_dispatch` over
  the two receives kept two tasks, their coroutines and a wait per connected charger: 3.7 KB
  each, measured with tracemalloc at 100 chargers. Any other server's receive gets a waiting
  future per consumer, or a short list while the consumer is busy with its previous message;
- a failing layer (Redis down) is retried by the pump with back-off; consumers only wait, so a
  charger's own frames, which need only the database, are served meanwhile.

Sending one message: `channel_layer.send(channel_name, …)` from any process reaches the
consumer. Sending many (the control loop's profiles after a limit cut: one or two per charger,
thousands at once): `batch_channel(layer, channel_name)` names the process's own batch channel,
and one message of type `BATCH_TYPE` there carries `items`, a list of [channel name, message],
which the pump hands out as if each had come alone. One Redis write and one place in the process's
inbox (capacity 500 messages) then carry a hundred calls: a 5,000-charger cut is 100 messages,
where one per call filled the inbox and waited for it to drain at ~200 messages/s.

Whether a process is alive: while it has consumers, its inbox keeps a key in Redis
(`ALIVE_PREFIX` + its process key, refreshed every ALIVE_REFRESH_S, expiring after ALIVE_TTL_S).
A reconnecting charger whose old connection was another process's asks `process_alive` before
telling that connection to close: after a restart every charger of the dead process reconnects,
and each notice went to an inbox nobody reads (a Redis round trip each, up to the inbox's
capacity, then ChannelFull). One read per dead process now answers all of them. A process that
stops cleanly (SIGTERM, Ctrl-C: `withdraw_at_shutdown`) deletes its key as it goes, so the
chargers reconnecting right after a restart do not find it alive for up to ALIVE_TTL_S more.

Layers other than channels-redis's core layer keep Channels' receive per consumer (and one
message per call).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

from chargers.loops import PerLoop, run_at_server_stop
from chargers.ratelimit import ThrottledLog

logger = logging.getLogger(__name__)
_throttled = ThrottledLog(logger)

# Messages kept for a consumer busy with its previous one (a server call is handed to a task at
# once, so more than a few means something is wrong): the oldest are dropped beyond this.
PENDING_MAX = 100
# The channel, in each process's key, whose messages carry calls for several of its consumers.
BATCH_NAME = "inbox-batch"
BATCH_TYPE = "inbox.batch"
# A process's liveness key: refreshed this often while it has consumers, gone this long after
# the process (or its last consumer). What another process read is trusted for ALIVE_CACHE_S.
ALIVE_PREFIX = "evce:inbox-alive:"
ALIVE_REFRESH_S = 10.0
ALIVE_TTL_S = 30
ALIVE_CACHE_S = 10.0
# How long a stopping process waits for Redis to delete its liveness key.
WITHDRAW_TIMEOUT_S = 1.0


def process_key_of(channel: str) -> str:
    """The process key ("specific.<prefix>!") of a channel-layer channel name: what names the
    process (and its inbox) that reads `channel`."""
    return channel[:channel.index("!") + 1] if "!" in channel else channel


def batch_channel(layer: Any, channel: str) -> str | None:
    """The batch channel of the process that reads `channel`, or None if `layer` has none.

    Only channels-redis's core layer has process keys (`specific.<prefix>!`), and under it every
    OCPP consumer receives through a process inbox (`_make_inbox`), the only reader of its key.
    """
    from channels_redis.core import RedisChannelLayer

    if not isinstance(layer, RedisChannelLayer) or not channel.startswith("specific.") or "!" not in channel:
        return None
    return process_key_of(channel) + BATCH_NAME


class ProcessInbox:
    """Receives the channel-layer messages of every OCPP consumer of one event loop."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._key = f"specific.{layer.client_prefix}!"
        self._batch = self._key + BATCH_NAME
        self._open: set[str] = set()
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._attached: dict[str, asyncio.Queue[Any]] = {}  # channel -> its consumer's ASGI receive queue
        self._pump: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._alive_seen: dict[str, tuple[bool, float]] = {}  # process key -> (alive, until)
        self._alive_reads: dict[str, asyncio.Future[bool]] = {}
        self._withdrawn = False

    async def new_channel(self) -> str:
        channel = str(await self.layer.new_channel())
        self._open.add(channel)
        if not self._withdrawn and (self._heartbeat is None or self._heartbeat.done()):
            self._heartbeat = asyncio.ensure_future(self._keep_alive())
        return channel

    async def withdraw(self) -> None:
        """The process is stopping: its liveness key is deleted now and not refreshed again.
        Redis away or slow: the key expires on its own (ALIVE_TTL_S)."""
        self._withdrawn = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        try:
            await asyncio.wait_for(self._redis(self._key).delete(ALIVE_PREFIX + self._key), WITHDRAW_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - stopping anyway; the key expires
            logger.debug("could not delete the inbox's liveness key", exc_info=True)

    async def process_alive(self, process_key: str) -> bool:
        """Whether the process reading `process_key` ("specific.<prefix>!") has consumers: its
        liveness key exists. Concurrent asks share one read; a failed read says alive (the
        caller then sends as it would have, and handles that send's failure)."""
        if process_key == self._key:
            return True
        seen = self._alive_seen.get(process_key)
        if seen is not None and seen[1] > time.monotonic():
            return seen[0]
        read = self._alive_reads.get(process_key)
        if read is None:
            read = asyncio.ensure_future(self._read_alive(process_key))
            self._alive_reads[process_key] = read
            read.add_done_callback(lambda _done: self._alive_reads.pop(process_key, None))
        return await asyncio.shield(read)

    async def _read_alive(self, process_key: str) -> bool:
        try:
            alive = bool(await self._redis(process_key).exists(ALIVE_PREFIX + process_key))
        except Exception:  # noqa: BLE001 - Redis away: the caller's send finds out on its own
            return True
        now = time.monotonic()
        for key in [key for key, (_alive, until) in self._alive_seen.items() if until <= now]:
            del self._alive_seen[key]
        self._alive_seen[process_key] = (alive, now + ALIVE_CACHE_S)
        return alive

    async def _keep_alive(self) -> None:
        """This process's liveness key, refreshed while any consumer is open."""
        while self._open and not self._withdrawn:
            try:
                await self._redis(self._key).set(ALIVE_PREFIX + self._key, "1", ex=ALIVE_TTL_S)
            except Exception:  # noqa: BLE001 - Redis away: the pump says so; tried again next period
                logger.debug("could not refresh the inbox's liveness key", exc_info=True)
            await asyncio.sleep(ALIVE_REFRESH_S)

    def _redis(self, key: str) -> Any:
        """The layer's Redis connection for `key` (the shard its channels live on)."""
        return self.layer.connection(self.layer.consistent_hash(key))

    def attach(self, channel: str, queue: asyncio.Queue[Any]) -> None:
        """Put `channel`'s messages into `queue` (the consumer's ASGI receive queue) from now on,
        at most PENDING_MAX messages deep; `close` detaches it."""
        self._attached[channel] = queue
        self._start_pump()

    def _start_pump(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._run())

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message for `channel` (a channel from `new_channel`, not yet closed)."""
        pending = self._pending.get(channel)
        if pending:
            message = pending.pop(0)
            if not pending:
                del self._pending[channel]
            return message
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[channel] = future
        self._start_pump()
        try:
            return await future
        finally:
            if self._waiting.get(channel) is future:
                del self._waiting[channel]

    def close(self, channel: str) -> None:
        """The consumer of `channel` is gone: its later messages are dropped."""
        self._open.discard(channel)
        self._attached.pop(channel, None)
        self._pending.pop(channel, None)
        future = self._waiting.pop(channel, None)
        if future is not None and not future.done():
            future.cancel()

    def owns(self, channel: str) -> bool:
        """Whether `channel` is one of this process's (live or closed): a message for it can be
        delivered here without a round trip through Redis."""
        return channel.startswith(self._key)

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        queue = self._attached.get(channel)
        if queue is not None:
            if queue.qsize() < PENDING_MAX:
                queue.put_nowait(message)
            else:  # its frames and messages are all still there: the newest is the one dropped
                _warn_dropped(channel, queue.qsize(), message)
            return
        future = self._waiting.pop(channel, None)
        if future is not None and not future.done():
            future.set_result(message)
            return
        if channel not in self._open:
            logger.debug("message %s for a closed channel dropped", message.get("type"))
            return
        pending = self._pending.setdefault(channel, [])
        pending.append(message)
        if len(pending) > PENDING_MAX:
            _warn_dropped(channel, len(pending) - 1, pending.pop(0))

    @property
    def consumers(self) -> int:
        return len(self._open)

    async def _run(self) -> None:
        """BRPOP the process key while any consumer is open; a failing layer is retried."""
        delay_s, failing = 0.5, False
        while self._open:
            try:
                channel, message = await self.layer.receive_single(self._key)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - any layer failure: retry, never close a charger
                if not failing:
                    _throttled.warning(("layer", self._key), "channel layer unavailable (%s); server calls to "
                                       "this process's chargers wait until it is back", type(error).__name__)
                failing = True
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
                continue
            if failing:
                logger.info("channel layer back")
                delay_s, failing = 0.5, False
            if channel == self._batch:
                self._deliver_batch(message)
            else:
                self.deliver(channel, message)

    def _deliver_batch(self, batch: dict[str, Any]) -> None:
        items = batch.get("items") if batch.get("type") == BATCH_TYPE else None
        if not isinstance(items, list):
            logger.warning("malformed batch message on %s dropped", self._batch)
            return
        for item in items:
            if isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[1], dict):
                self.deliver(str(item[0]), item[1])
            else:
                logger.warning("malformed item of a batch message dropped")


def _warn_dropped(channel: str, behind: int, dropped: dict[str, Any]) -> None:
    _throttled.warning(("inbox", channel), "a consumer is %d messages behind; dropped a %s", behind,
                       dropped.get("type"))


def _make_inbox() -> ProcessInbox | None:
    """An inbox on a layer instance of its own; None unless the default layer is channels-redis's core layer."""
    if DEFAULT_CHANNEL_LAYER not in channel_layers.configs:
        return None
    from channels_redis.core import RedisChannelLayer

    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    return ProcessInbox(layer) if isinstance(layer, RedisChannelLayer) else None


# The running loop's inbox (one per process under Daphne), or None for other layers.
process_inbox = PerLoop(_make_inbox)


def withdraw_at_shutdown() -> bool:
    """Under Daphne, delete the process's liveness key when the server stops (`ProcessInbox.withdraw`,
    at most WITHDRAW_TIMEOUT_S, through `run_at_server_stop`). False when there is no reactor."""

    def withdraw() -> Awaitable[None] | None:
        inbox = process_inbox.existing()
        return None if inbox is None else inbox.withdraw()

    return run_at_server_stop(withdraw)
