"""chargers.loops: per-loop objects and the work a web process does when its server stops."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from typing import Any

from chargers.loops import PerLoop, run_at_server_stop


class FakeReactor:
    def __init__(self) -> None:
        self.triggers: list[tuple[str, str, Any]] = []

    def addSystemEventTrigger(self, phase: str, event: str, callback: Any) -> None:  # noqa: N802 - Twisted's name
        self.triggers.append((phase, event, callback))


def test_the_stop_work_runs_before_the_reactor_shuts_down_and_is_waited_for(monkeypatch):
    reactor = FakeReactor()
    monkeypatch.setitem(sys.modules, "twisted.internet.reactor", reactor)
    done: list[str] = []

    async def flush() -> None:
        await asyncio.sleep(0)
        done.append("flushed")

    assert run_at_server_stop(flush) is True
    assert run_at_server_stop(lambda: None) is True  # nothing to do at that stop
    (phase, event, with_work), (_, _, without_work) = reactor.triggers
    assert (phase, event) == ("before", "shutdown") and done == []

    async def server_stops() -> None:
        from twisted.internet.defer import Deferred

        waited_for = with_work()
        assert isinstance(waited_for, Deferred)  # the reactor waits for it
        await waited_for.asFuture(asyncio.get_running_loop())
        assert without_work() is None

    asyncio.run(server_stops())
    assert done == ["flushed"]


def test_without_a_reactor_nothing_is_registered(monkeypatch):
    monkeypatch.delitem(sys.modules, "twisted.internet.reactor", raising=False)
    assert run_at_server_stop(lambda: None) is False


def test_an_object_per_loop_made_once_and_existing_only_once_made():
    made: list[int] = []
    per_loop = PerLoop(lambda: made.append(1) or len(made))

    async def in_a_loop() -> tuple[object, int, int, object]:
        before = per_loop.existing()
        return before, per_loop(), per_loop(), per_loop.existing()

    assert asyncio.run(in_a_loop()) == (None, 1, 1, 1)
    assert asyncio.run(in_a_loop()) == (None, 2, 2, 2)  # a new loop, a new object


def test_loops_taken_in_turn_each_get_their_own_object_and_a_gone_loop_takes_its_object_along():
    class Made:
        pass

    per_loop = PerLoop(Made)

    async def get() -> Made:
        return per_loop()

    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    of_first = first.run_until_complete(get())
    of_second = second.run_until_complete(get())
    assert first.run_until_complete(get()) is of_first and of_second is not of_first
    assert second.run_until_complete(get()) is of_second

    assert first.run_until_complete(get()) is of_first  # the last one served: the first loop's
    first_gone = weakref.ref(of_first)
    first.close()
    second.close()
    del first, of_first
    gc.collect()
    assert first_gone() is None
