"""When a booted charger's configuration steps start: after a storm's boots stop, then a jitter.

The steps that only configure a charger (auto configuration, the local list: six calls and their
answers) are deferred in a boot storm until no charger of the process has booted for a quiet
period, and then spread by a random jitter that grows with the boots in progress. The safety
steps (the safe default profile, stale sessions closed) never wait; they are not queued here.

Why defer them: a storm's configuration steps ran among the handshakes, boots and
StartTransactions still arriving, which then waited behind them on the event loop and the
database thread. Deferred to the quiet after the storm (bench/bench_scale.py, SQLite, two
processes, A/B pairs), every charger connected, booted and its transaction started in 2.1 s
instead of 2.8–3.2 s at 1,000, in 10.9–11.0 s instead of 19.0–19.2 s at 5,000.

Why a queue and not a sleeping task per charger: in a storm every booted charger waited, each in
its own task with its chain of coroutines and timers (~1.6 KB a charger, tracemalloc, at 125
chargers a process), and each woke every time the quiet was pushed back by another boot. One
`DeferredBootSteps` per event loop holds the waiting chargers in a heap and starts each one's
steps when its time comes: one timer for all of them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

# From this many chargers of one process in their boot steps at once, a boot is part of a storm.
STORM_BOOTS = 20

# Seconds of boot-step work to spread per charger booting at the same time: a lone boot
# waits at most this long, a storm of 1,000 up to 20 s (capped by OCPP_BOOT_JITTER_MAX_S).
JITTER_PER_BOOT_S = 0.02


def boot_jitter_s(booting: int, max_s: float) -> float:
    """A random delay before the configuration steps of one of `booting` concurrent boots."""
    return random.uniform(0.0, min(max_s, booting * JITTER_PER_BOOT_S))  # noqa: S311


def storm_wait_s(*, now: float, last_boot_at: float, booting: int, quiet_s: float, until: float) -> float:
    """How long configuration steps still wait for a storm's boots to stop (0: go now): until
    none has begun for `quiet_s`, never past `until`; no wait outside a storm."""
    if booting < STORM_BOOTS or quiet_s <= 0:
        return 0.0
    return max(0.0, min(last_boot_at + quiet_s, until) - now)


@dataclass(frozen=True)
class StormState:
    """What the queue reads of the process's boots each time it decides: how many chargers are
    in their boot steps, when the last one began, and the two settings (read when used, so a
    changed setting applies to the next decision)."""

    booting: Callable[[], int]
    last_boot_at: Callable[[], float]
    quiet_s: Callable[[], float]
    jitter_max_s: Callable[[], float]


Waiter = TypeVar("Waiter", bound=Hashable)


class DeferredBootSteps(Generic[Waiter]):
    """The chargers of one event loop whose configuration steps wait, and one task that starts
    them: `start(waiter)` is called once per waiter added and not dropped, when its time comes.

    A waiter first waits for the storm's quiet (`storm_wait_s`), at most `jitter_max_s` after it
    was added, then for its jitter, drawn when the quiet comes. Outside a storm the quiet is now.
    """

    def __init__(self, start: Callable[[Waiter], None], storm: StormState) -> None:
        self._start = start
        self._storm = storm
        # Waiters for the quiet, oldest first (their caps, `until`, in the same order).
        self._quiet: dict[Waiter, float] = {}
        # Waiters past the quiet: (when, order, waiter), soonest first; one dropped is skipped.
        self._jittered: list[tuple[float, int, Waiter]] = []
        self._jittered_waiters: set[Waiter] = set()
        self._order = itertools.count()
        self._runner: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._quiet) + len(self._jittered_waiters)

    def add(self, waiter: Waiter) -> bool:
        """Queue `waiter`: False when it already waits (it is started once)."""
        if waiter in self._quiet or waiter in self._jittered_waiters:
            return False
        self._quiet[waiter] = time.monotonic() + self._storm.jitter_max_s()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._serve())
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)  # outside a storm it may go now, not at the next timer
        return True

    def drop(self, waiter: Waiter) -> bool:
        """Forget `waiter` (its charger went away): whether it was waiting."""
        if self._quiet.pop(waiter, None) is not None:
            return True
        if waiter in self._jittered_waiters:
            self._jittered_waiters.discard(waiter)  # its heap entry is skipped when due
            return True
        return False

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while self._quiet or self._jittered_waiters:
            delay_s = self._start_due(time.monotonic())
            if delay_s is None:
                continue
            self._wake = loop.create_future()
            timer = loop.call_later(delay_s, _settle, self._wake)
            try:
                await self._wake
            finally:
                timer.cancel()
                self._wake = None

    def _start_due(self, now: float) -> float | None:
        """Move the waiters whose quiet has come to the jitter heap and start those whose time
        has come; the seconds until the next thing to do (None: look again at once)."""
        storm = self._storm
        quiet_wait_s = None
        if self._quiet:
            quiet_wait_s = storm_wait_s(now=now, last_boot_at=storm.last_boot_at(), booting=storm.booting(),
                                        quiet_s=storm.quiet_s(), until=next(iter(self._quiet.values())))
            if quiet_wait_s <= 0:
                quiet_wait_s = None
                waiters, self._quiet = self._quiet, {}
                booting, jitter_max_s = storm.booting(), storm.jitter_max_s()
                for waiter in waiters:
                    when = now + boot_jitter_s(booting, jitter_max_s)
                    heapq.heappush(self._jittered, (when, next(self._order), waiter))
                    self._jittered_waiters.add(waiter)
        while self._jittered and self._jittered[0][0] <= now:
            _, _, waiter = heapq.heappop(self._jittered)
            if waiter in self._jittered_waiters:
                self._jittered_waiters.discard(waiter)
                try:
                    self._start(waiter)
                except Exception:  # one charger's failure must not strand the others
                    logger.exception("could not start the deferred boot steps of %s", waiter)
        if not self._jittered_waiters:
            self._jittered.clear()  # only dropped waiters' entries were left
        if self._jittered:
            next_start_s = self._jittered[0][0] - now
            return next_start_s if quiet_wait_s is None else min(quiet_wait_s, next_start_s)
        return quiet_wait_s


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
