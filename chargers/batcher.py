"""Per-charger database work of a boot storm, done for many chargers in one hop.

A reconnect storm boots thousands of chargers within seconds, and each boot step that reads or
writes the database for its charger alone costs a hop to the database thread and a transaction
of its own: the process spent more time on those than on the chargers. A `Batcher` wraps a
function of many keys (charger pks) instead; a consumer submits its key and awaits its result:

1. the batch is taken when the database thread is free to run it (inside the hop), so what was
   submitted while that thread was busy (with the write buffer, the previous batch …) goes
   together: no timer, so a single boot waits for nothing and a storm gets large batches;
2. at most `max_batch` keys go in one call; the rest form the next;
3. if a batch fails, its keys are run one by one, so one bad key fails alone (its awaiting
   consumer gets the exception, as without batching).

Like the write buffer (chargers.writebuffer), one batcher serves one event loop (`PerLoop`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class Batcher(Generic[K, R]):
    """`await batcher.submit(key)`: `run([... key ...])[key]`, run together with the keys of others."""

    def __init__(self, run: Callable[[Sequence[K]], Mapping[K, R]], *, max_batch: int = 500,
                 name: str = "batch") -> None:
        self._run_batch = run
        self._max_batch = max_batch
        self._name = name
        # Appended on the event loop, taken on the database thread.
        self._pending: list[tuple[K, asyncio.Future[R]]] = []
        self._lock = threading.Lock()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # calls of `run` that succeeded (tests, benchmarks)

    async def submit(self, key: K) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._pending.append((key, future))
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._serve())
        return await future

    async def _serve(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._has_pending():
                await self._run_next_batch()

    async def _run_next_batch(self) -> None:
        """Run what is queued now and settle its futures. A function of its own so that nothing
        of the batch outlives it: as locals of `_serve`, which then waits for the next batch,
        the last batch's futures and results stayed alive for as long as the process was quiet
        (after a boot storm, every booted charger's, in each of a process's batchers)."""
        try:
            outcomes = await database_sync_to_async(self._take_and_run)()
        except BaseException as error:  # the loop is closing: tell every waiter
            with self._lock:
                left, self._pending = self._pending, []
            for _, future in left:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception) else RuntimeError("closed"))
            raise
        for future, outcome in outcomes:
            if future.done():  # its consumer went away (cancelled)
                continue
            if isinstance(outcome, _Failed):
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome)

    def _has_pending(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def _take_and_run(self) -> list[tuple[asyncio.Future[R], R | _Failed]]:
        """On the database thread: take what is queued now and run it."""
        with self._lock:
            batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
        if not batch:
            return []
        keys = list(dict.fromkeys(key for key, _ in batch))
        try:
            results = self._run_batch(keys)
        except Exception as error:  # noqa: BLE001 - one key alone: its consumer gets the error
            if len(keys) == 1:
                return [(future, _Failed(error)) for _, future in batch]
            logger.warning("%s of %d keys failed; running them one by one", self._name, len(keys), exc_info=True)
        else:
            self.batches += 1
            return [(future, results[key]) for key, future in batch]
        alone: dict[K, R | _Failed] = {}
        for key in keys:
            try:
                alone[key] = self._run_batch([key])[key]
            except Exception as error:  # noqa: BLE001 - handed to the key's waiting consumer
                alone[key] = _Failed(error)
        return [(future, alone[key]) for key, future in batch]


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error
