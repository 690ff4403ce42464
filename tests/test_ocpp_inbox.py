"""The process inbox (chargers.inbox): one channel-layer receive for every OCPP consumer of a process."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from chargers.inbox import BATCH_NAME, BATCH_TYPE, PENDING_MAX, ProcessInbox, batch_channel, process_key_of
from loadmgmt import profiles


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


def test_a_batch_message_is_handed_out_as_if_each_call_had_come_alone():
    async def scenario() -> None:
        layer = FakeCoreLayer()
        inbox = ProcessInbox(layer)
        channels = [await inbox.new_channel() for _ in range(3)]
        gone = channels.pop()
        inbox.close(gone)
        waiting = asyncio.ensure_future(inbox.receive(channels[0]))
        await asyncio.sleep(0)
        batch = "specific.abc!" + BATCH_NAME
        layer.queue.put_nowait((batch, {"type": BATCH_TYPE, "items": [
            [channels[0], {"type": "ocpp.call", "n": 0}], [gone, {"type": "ocpp.call", "n": 9}],
            [channels[1], {"type": "ocpp.call", "n": 1}], [channels[1], {"type": "ocpp.call", "n": 2}],
        ]}))
        layer.queue.put_nowait((batch, {"type": BATCH_TYPE, "items": "not a list"}))  # dropped, pump goes on
        layer.queue.put_nowait((batch, {"type": BATCH_TYPE, "items": [["x"], [channels[0], {"type": "late"}]]}))
        assert (await asyncio.wait_for(waiting, 5))["n"] == 0
        assert [(await inbox.receive(channels[1]))["n"] for _ in range(2)] == [1, 2]  # in order
        assert (await asyncio.wait_for(inbox.receive(channels[0]), 5))["type"] == "late"  # the bad item skipped
        assert gone not in inbox._pending
        for channel in channels:
            inbox.close(channel)

    asyncio.run(scenario())


def test_batch_channels_exist_only_on_the_core_redis_layer():
    from channels.layers import InMemoryChannelLayer, channel_layers

    core = channel_layers.make_backend("default")
    assert batch_channel(core, "specific.abc!def") == "specific.abc!" + BATCH_NAME
    assert batch_channel(core, "general-channel") is None
    assert batch_channel(InMemoryChannelLayer(), "specific.abc!def") is None


def test_a_cut_on_a_thousand_chargers_reaches_two_processes_in_a_few_messages_through_real_redis():
    """1,000 calls for consumers of two processes over the real layer (capacity 500 messages per
    process): handed over in 10 messages, none refused, every consumer gets its own, in order."""
    from channels.layers import channel_layers

    from chargers import commands

    async def scenario() -> None:
        inboxes = [ProcessInbox(channel_layers.make_backend("default")) for _ in range(2)]
        channels = [await inboxes[n % 2].new_channel() for n in range(500)]
        casts = [commands.Cast(channel_name=channel, action="SetChargingProfile",
                               payload=profiles.tx_payload(1, n, 6.0 + round, 3), timeout_s=30,
                               outcome_hook="test", context={"n": n, "round": round})
                 for round in range(2) for n, channel in enumerate(channels)]
        casts.append(commands.Cast(channel_name=channels[0], action="SetChargingProfile", payload={"bad": 1},
                                   timeout_s=30, outcome_hook="test", context={}))
        sent: list[str] = []
        layer = commands.get_channel_layer()
        real_send = layer.send

        async def counting_send(channel: str, message: dict[str, Any]) -> None:
            sent.append(channel)
            await real_send(channel, message)

        layer.send = counting_send
        try:
            errors = await commands._cast_all(casts)
        finally:
            del layer.send
        assert errors[:-1] == [None] * 1000
        assert errors[-1] is not None and "rejected" in errors[-1]  # validated before anything went out
        assert len(sent) == 10 and all(channel.endswith("!" + BATCH_NAME) for channel in sent)
        for n, channel in enumerate(channels):
            inbox = inboxes[n % 2]
            got = [await asyncio.wait_for(inbox.receive(channel), 10) for _ in range(2)]
            assert [(m["context"]["n"], m["context"]["round"]) for m in got] == [(n, 0), (n, 1)]
            assert got[1]["payload"]["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0][
                "limit"] == 7.0
        for n, channel in enumerate(channels):
            inboxes[n % 2].close(channel)

    asyncio.run(scenario())


def test_a_replaced_connection_of_this_process_is_told_here_and_a_dead_process_is_said_once(caplog):
    """A reconnect replaces the old connection: one of this process's gets the notice without
    Redis; a process that reads nothing (restarted: its inbox full) is warned about once and not
    sent to again for a while, not once per charger of a storm."""
    from channels.exceptions import ChannelFull

    from chargers import consumers

    sends: list[str] = []

    class FullLayer:
        async def send(self, channel: str, message: dict[str, Any]) -> None:
            sends.append(channel)
            raise ChannelFull()

    class Replacing:
        charge_point_id = "CP-AGAIN"
        channel_layer = FullLayer()

    async def scenario() -> dict[str, Any]:
        inbox = consumers.process_inbox()
        assert inbox is not None
        ours = await inbox.new_channel()
        await consumers.OcppConsumer._close_replaced(Replacing(), ours)  # type: ignore[arg-type]
        notice = await asyncio.wait_for(inbox.receive(ours), 5)
        inbox.close(ours)
        for n in range(20):
            await consumers.OcppConsumer._close_replaced(Replacing(), f"specific.gone-process!{n}")  # type: ignore[arg-type]
        return notice

    consumers._full_inboxes.clear()
    _mark_alive("specific.gone-process!")  # alive by its key, yet reading nothing
    assert asyncio.run(scenario()) == {"type": "ocpp.replaced"}
    # Ours went without the layer; the dead process's inbox was tried once, then left alone a while.
    assert sends == ["specific.gone-process!0"]
    warned = [r for r in caplog.records if "could not tell the replaced connection" in r.getMessage()]
    assert len(warned) == 1
    # Once the pause is over it is tried again (the process may have drained its inbox since).
    consumers._full_inboxes["specific.gone-process!"] = time.monotonic() - 1
    asyncio.run(consumers.OcppConsumer._close_replaced(Replacing(), "specific.gone-process!99"))  # type: ignore[arg-type]
    assert sends[-1] == "specific.gone-process!99"
    consumers._full_inboxes.clear()


def _mark_alive(process_key: str, alive: bool = True) -> None:
    import redis
    from django.conf import settings

    from chargers.inbox import ALIVE_PREFIX

    client = redis.Redis.from_url(settings.REDIS_URL)
    if alive:
        client.set(ALIVE_PREFIX + process_key, "1", ex=60)
    else:
        client.delete(ALIVE_PREFIX + process_key)


async def _first_refresh(inbox: ProcessInbox, process_key: str) -> None:
    """Until the inbox's liveness key is in Redis (its heartbeat writes it right after the first channel)."""
    from chargers.inbox import ALIVE_PREFIX

    for _ in range(500):
        if await inbox._redis(process_key).exists(ALIVE_PREFIX + process_key):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the liveness key was never written")


def test_a_process_with_consumers_is_alive_and_a_gone_one_is_read_once_for_all_who_ask():
    """Through real Redis: an inbox with a consumer keeps its liveness key; a restarted process's
    key is absent, and a storm of chargers asking about it costs one read."""
    from channels.layers import channel_layers

    from chargers import inbox as inbox_module

    async def scenario() -> None:
        live, asking = (ProcessInbox(channel_layers.make_backend("default")) for _ in range(2))
        channel = await live.new_channel()
        live_key = process_key_of(channel)
        await _first_refresh(live, live_key)  # an answer is remembered a while: wait for the key
        assert await asking.process_alive(live_key) is True
        reads = 0
        real_read = asking._read_alive

        async def counted(process_key: str) -> bool:
            nonlocal reads
            reads += 1
            return await real_read(process_key)

        asking._read_alive = counted  # type: ignore[method-assign]
        answers = await asyncio.gather(*(asking.process_alive("specific.restarted!") for _ in range(200)))
        assert answers == [False] * 200 and reads == 1
        assert await asking.process_alive("specific.restarted!") is False and reads == 1  # remembered a while
        live.close(channel)
        live._heartbeat.cancel()  # type: ignore[union-attr]

    _mark_alive("specific.restarted!", alive=False)
    asyncio.run(scenario())
    assert inbox_module.ALIVE_TTL_S > inbox_module.ALIVE_REFRESH_S * 2  # two refreshes may fail before it expires


def test_a_withdrawn_inbox_is_gone_at_once_and_stays_gone():
    """Through real Redis: a stopping process deletes its liveness key, and neither its heartbeat
    nor a consumer opening during the shutdown writes it again."""
    from channels.layers import channel_layers

    from chargers import inbox as inbox_module

    async def scenario() -> None:
        stopping, asking = (ProcessInbox(channel_layers.make_backend("default")) for _ in range(2))
        channel = await stopping.new_channel()
        key = process_key_of(channel)
        redis_client = stopping._redis(key)
        await _first_refresh(stopping, key)
        await stopping.withdraw()
        assert not await redis_client.exists(inbox_module.ALIVE_PREFIX + key)
        assert await asking.process_alive(key) is False
        late = await stopping.new_channel()
        await asyncio.sleep(0.05)
        assert not await redis_client.exists(inbox_module.ALIVE_PREFIX + key)
        assert stopping._heartbeat is not None and stopping._heartbeat.done()
        stopping.close(channel)
        stopping.close(late)

    asyncio.run(scenario())


def test_a_withdraw_with_redis_away_gives_up_and_lets_the_key_expire():
    class Unreachable:
        async def delete(self, _key: str) -> int:
            raise ConnectionError("redis down")

    inbox = ProcessInbox(FakeCoreLayer())
    inbox._redis = lambda _key: Unreachable()  # type: ignore[method-assign]
    asyncio.run(inbox.withdraw())  # no error: the process stops all the same


def test_a_replaced_connection_of_a_gone_process_is_not_sent_to(caplog):
    from chargers import consumers

    sends: list[str] = []

    class Layer:
        async def send(self, channel: str, message: dict[str, Any]) -> None:
            sends.append(channel)

    class Replacing:
        charge_point_id = "CP-BACK"
        channel_layer = Layer()

    async def storm() -> None:
        await asyncio.gather(*(consumers.OcppConsumer._close_replaced(Replacing(), f"specific.dead-one!{n}")  # type: ignore[arg-type]
                               for n in range(100)))

    consumers._full_inboxes.clear()
    _mark_alive("specific.dead-one!", alive=False)
    asyncio.run(storm())
    assert sends == []
    assert not [r for r in caplog.records if "could not tell the replaced connection" in r.getMessage()]
    _mark_alive("specific.dead-one!")  # a live process (say another host's) is told
    asyncio.run(consumers.OcppConsumer._close_replaced(Replacing(), "specific.dead-one!7"))  # type: ignore[arg-type]
    assert sends == ["specific.dead-one!7"]


def test_calls_for_one_channel_arrive_in_the_order_given_even_when_sends_would_overtake(monkeypatch):
    """Each send of this layer takes less time than the one before, so sends in flight together
    would arrive in reverse: the calls of one channel must still arrive in the order given."""
    from chargers import commands

    arrived: list[tuple[str, int]] = []
    pace = itertools.count()

    class OvertakingLayer:
        async def send(self, channel: str, message: dict[str, Any]) -> None:
            await asyncio.sleep(max(0.0, 0.02 - 0.001 * next(pace)))
            arrived.append((channel, message["context"]["n"]))

    monkeypatch.setattr(commands, "get_channel_layer", lambda: OvertakingLayer())
    channels = [f"specific.p!{name}" for name in ("a", "b", "c")]
    casts = [commands.Cast(channel_name=channel, action="SetChargingProfile",
                           payload=profiles.tx_payload(1, 7, 6.0 + n, 3), timeout_s=30, outcome_hook="test",
                           context={"n": n})
             for n in range(5) for channel in channels]
    assert asyncio.run(commands._cast_all(casts)) == [None] * 15
    for channel in channels:
        assert [n for name, n in arrived if name == channel] == [0, 1, 2, 3, 4]


def test_a_channels_process_key_names_the_process_that_reads_it():
    assert process_key_of("specific.abc!0f3e") == "specific.abc!"
    assert process_key_of("specific.abc!inbox-batch") == "specific.abc!"
    assert process_key_of("dashboard") == "dashboard"  # not a process's channel: itself


def test_an_attached_queue_gets_its_channels_messages_at_most_pending_max_deep_until_closed(caplog):
    """A consumer whose receive is a queue (Daphne) gets its messages there, beside its frames;
    one far behind loses the newest (its queued frames come first), one closed gets nothing."""
    async def scenario() -> None:
        layer = FakeCoreLayer()
        layer.client_prefix = "attached"  # a channel name of its own: the warning is throttled per channel
        inbox = ProcessInbox(layer)
        channel = await inbox.new_channel()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        queue.put_nowait({"type": "websocket.receive"})
        inbox.attach(channel, queue)
        layer.queue.put_nowait((channel, {"type": "ocpp.call", "n": 0}))  # through the pump
        for _ in range(100):
            if queue.qsize() == 2:
                break
            await asyncio.sleep(0.01)
        assert [queue.get_nowait()["type"], queue.get_nowait()["n"]] == ["websocket.receive", 0]
        for n in range(1, PENDING_MAX + 6):
            inbox.deliver(channel, {"type": "ocpp.call", "n": n})
        assert queue.qsize() == PENDING_MAX
        assert [queue.get_nowait()["n"] for _ in range(PENDING_MAX)] == list(range(1, PENDING_MAX + 1))
        assert "messages behind" in caplog.text
        inbox.close(channel)
        inbox.deliver(channel, {"type": "ocpp.call", "n": -1})
        assert queue.empty() and inbox.consumers == 0

    asyncio.run(scenario())
