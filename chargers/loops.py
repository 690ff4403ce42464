"""One object per running event loop: a process's write buffer, inbox, send limits.

Under Daphne a process runs one event loop, so each is a per-process singleton; tests run
several loops one after another, and an object bound to a finished loop (its futures, locks,
tasks) must not serve the next. Held weakly: a loop that is gone takes its object with it.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

_T = TypeVar("_T")


class PerLoop(Generic[_T]):
    """`PerLoop(make)()`: the running loop's object, made by `make()` on first use."""

    def __init__(self, make: Callable[[], _T]) -> None:
        self._make = make
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _T] = weakref.WeakKeyDictionary()

    def __call__(self) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return self._values[loop]
        except KeyError:
            value = self._values[loop] = self._make()
            return value

    def existing(self) -> _T | None:
        """The running loop's object if it was made, else None (nothing is made)."""
        return self._values.get(asyncio.get_running_loop())


def run_at_server_stop(make: Callable[[], Awaitable[object] | None]) -> bool:
    """Under Daphne (Twisted's reactor on the asyncio loop): when the server stops, run the
    awaitable `make()` returns (None: nothing to do), on the running loop; the reactor waits for
    it before it shuts down. False when there is no reactor (an in-process ASGI test, another
    server): nothing is registered."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return False
    from twisted.internet.defer import Deferred

    def at_stop() -> Deferred[object] | None:
        awaitable = make()
        return None if awaitable is None else Deferred.fromFuture(asyncio.ensure_future(awaitable))

    reactor.addSystemEventTrigger("before", "shutdown", at_stop)
    return True
