"""The process inbox (chargers.inbox): one channel-layer receive for every OCPP consumer of a process."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from chargers.inbox import PENDING_MAX, ProcessInbox


class FakeCoreLayer:
    """What the inbox uses of channels-redis's core layer: new_channel, receive_single on the process key."""

    client_prefix = "abc"

    def __init__(self, failures: int = 0) -> None:
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.failures = failures
        self.receiving = 0
        self.most_receiving = 0
        self.keys: set[str] = set()
        self._ids = itertools.count()

    async def new_channel(self) -> str:
        return f"specific.{self.client_prefix}!{next(self._ids)}"

    async def receive_single(self, key: str) -> tuple[str, dict[str, Any]]:
        self.keys.add(key)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis down")
        self.receiving += 1
        self.most_receiving = max(self.most_receiving, self.receiving)
        try:
            return await self.queue.get()
        finally:
            self.receiving -= 1


def test_each_consumer_gets_its_own_messages_through_one_receive():
    async def scenario() -> None:
        layer = FakeCoreLayer()
        inbox = ProcessInbox(layer)
        channels = [await inbox.new_channel() for _ in range(50)]
        waiting = [asyncio.ensure_future(inbox.receive(channel)) for channel in channels]
        await asyncio.sleep(0)
        for n, channel in reversed(list(enumerate(channels))):
            layer.queue.put_nowait((channel, {"type": "ocpp.call", "n": n}))
        got = await asyncio.wait_for(asyncio.gather(*waiting), 5)
        assert [message["n"] for message in got] == list(range(50))
        assert layer.most_receiving == 1  # one BRPOP for the whole process, not one per consumer
        assert layer.keys == {"specific.abc!"}
        for channel in channels:
            inbox.close(channel)

    asyncio.run(scenario())


def test_a_busy_consumer_gets_its_messages_later_in_order_and_a_closed_one_none():
    async def scenario() -> None:
        layer = FakeCoreLayer()
        inbox = ProcessInbox(layer)
        busy, gone, other = [await inbox.new_channel() for _ in range(3)]
        inbox.close(gone)
        waiting = asyncio.ensure_future(inbox.receive(other))  # starts the pump
        await asyncio.sleep(0)
        for message in ({"type": "a"}, {"type": "b"}):
            layer.queue.put_nowait((busy, message))  # nobody waits on `busy` yet
        layer.queue.put_nowait((gone, {"type": "lost"}))
        layer.queue.put_nowait((other, {"type": "c"}))
        assert (await asyncio.wait_for(waiting, 5))["type"] == "c"
        assert [(await inbox.receive(busy))["type"] for _ in range(2)] == ["a", "b"]
        late = asyncio.ensure_future(inbox.receive(gone))
        await asyncio.sleep(0.05)
        assert not late.done()  # the message for the closed channel was dropped, not kept
        late.cancel()
        inbox.close(busy)
        inbox.close(other)

    asyncio.run(scenario())


def test_a_consumer_far_behind_keeps_the_latest_messages():
    async def scenario() -> None:
        layer = FakeCoreLayer()
        inbox = ProcessInbox(layer)
        channel = await inbox.new_channel()
        for n in range(PENDING_MAX + 5):
            inbox.deliver(channel, {"type": "x", "n": n})
        assert (await inbox.receive(channel))["n"] == 5
        inbox.close(channel)

    asyncio.run(scenario())


def test_a_failing_layer_is_retried_and_waiting_consumers_get_their_messages_after():
    async def scenario() -> None:
        layer = FakeCoreLayer(failures=2)
        inbox = ProcessInbox(layer)
        channel = await inbox.new_channel()
        waiting = asyncio.ensure_future(inbox.receive(channel))
        layer.queue.put_nowait((channel, {"type": "ocpp.call"}))
        assert (await asyncio.wait_for(waiting, 10))["type"] == "ocpp.call"  # after 0.5 + 1 s of back-off
        assert layer.failures == 0
        inbox.close(channel)

    asyncio.run(scenario())


def test_the_pump_stops_when_the_last_consumer_closed():
    async def scenario() -> None:
        layer = FakeCoreLayer()
        inbox = ProcessInbox(layer)
        channel = await inbox.new_channel()
        waiting = asyncio.ensure_future(inbox.receive(channel))
        await asyncio.sleep(0)
        inbox.close(channel)
        assert waiting.cancelled() or (await asyncio.gather(waiting, return_exceptions=True))
        layer.queue.put_nowait(("specific.abc!other", {"type": "x"}))  # the pump's current receive returns
        await asyncio.sleep(0.05)
        assert inbox._pump is not None and inbox._pump.done()
        assert inbox.consumers == 0

    asyncio.run(scenario())
