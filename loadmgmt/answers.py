"""Answers to the loop's profiles, group-committed where the websockets are.

A limit cut brings hundreds of answers within a second to the process holding the websockets.
Recorded one by one, each took a worker thread, a transaction of its own (waiting for the
database's write lock behind the others) and a re-balance request: the process spent more time
on them than on delivering the profiles. Here the outcome hook only queues the answer; what has
queued up is recorded in one transaction (`services.limit_answers_record`), followed by one
re-balance request when a lower limit came into force, or when an answer asked for one (a booted
charger's safe default: the loop raises it to its share once its answer is recorded).

Where the recording runs: queued from an event loop (a web process: the outcome hooks and the
boot step run on it), on the process's database thread, between the write buffer's batches, like
every other write of the process. A thread of its own held a database connection of its own
(with the proxy's link reads, which moved there too: ~0.5 MB of a web process on SQLite,
measured at its first charger), and on SQLite its transactions only queued for the write lock
behind the database thread's anyway. Queued from a plain thread (no event loop), a thread of
its own records them, as before.

What a crash of the process loses: the answers queued and not yet committed (milliseconds). Their
sends then pass their deadline unanswered, and the higher of the old and new limit stays counted
(`services.limit_expire_unanswered`): the conservative side, never an over-count.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from channels.db import database_sync_to_async
from django.db import close_old_connections, connections

from evce import clock
from loadmgmt import services

logger = logging.getLogger(__name__)

MAX_BATCH = 2000
ATTEMPTS = 3  # a batch that fails (database locked or busy) is tried again before it is given up


class AnswerRecorder:
    """A queue of answers and the one thread that records them, started at the first answer."""

    def __init__(self, on_lowered: Callable[[], object]) -> None:
        self._on_lowered = on_lowered
        self._queue: list[services.Answer] = []
        self._rebalance = False  # an answer queued since the last batch was taken asks for a re-balance
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._in_flight = 0  # batches being recorded: a loop's hop and the thread may overlap
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._drain: asyncio.Task[None] | None = None  # the event loop's hops to the database thread

    def submit(self, answer: services.Answer, *, rebalance: bool = False) -> None:
        """Queue `answer`; with `rebalance`, the loop is asked to run once it is recorded."""
        loop = _running_loop()
        with self._lock:
            self._queue.append(answer)
            self._rebalance = self._rebalance or rebalance
            if loop is not None:
                drain = self._drain
                if drain is None or drain.done() or drain.get_loop() is not loop:
                    self._drain = loop.create_task(self._drain_on_database_thread())
                return
            self._wake_thread()

    def _wake_thread(self) -> None:
        """(Holding the lock.) The recording thread started if need be, and told to look."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="loop-answers", daemon=True)
            self._thread.start()
        self._ready.notify()

    async def _drain_on_database_thread(self) -> None:
        """Record until the queue is empty, one batch per hop to the database thread: what queues
        while a hop waits for the thread goes with it. The queue is seen empty here, on the
        loop's thread where `submit` runs, so an answer queued as a hop came back empty is not
        left behind. Cancelled (the loop is closing), it leaves what is queued to the thread."""
        try:
            while True:
                if not await database_sync_to_async(self._take_and_record)():
                    with self._lock:
                        if not self._queue:
                            return
        except BaseException:
            with self._lock:
                if self._queue:
                    self._wake_thread()
            raise

    def _take_and_record(self) -> bool:
        """Record what is queued now (on the calling thread); False when nothing was."""
        with self._lock:
            if not self._queue:
                return False
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            # Asked by an answer of this batch or of a later one: either way after this commit.
            rebalance, self._rebalance = self._rebalance, False
            self._in_flight += 1
        try:
            self._record(batch, rebalance)
        finally:
            with self._lock:
                self._in_flight -= 1
        return True

    def idle(self) -> bool:
        """Nothing queued and nothing being written (tests wait for this)."""
        with self._lock:
            return not self._queue and not self._in_flight

    def stop(self, timeout_s: float = 10.0) -> None:
        """Record what is queued, then end the thread and close its database connection."""
        with self._lock:
            self._stopping = True
            self._ready.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        with self._lock:
            self._stopping = False

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._ready.wait()
                if not self._queue:  # stopping, nothing left
                    self._thread = None
                    connections.close_all()
                    return
            self._take_and_record()  # (an event loop's hop may have taken the queue meanwhile)

    def _record(self, batch: list[services.Answer], rebalance: bool) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            close_old_connections()  # a connection the database closed meanwhile is replaced
            try:
                lowered = services.limit_answers_record(batch, now=clock.now())
                break
            except Exception:
                if attempt == ATTEMPTS:
                    logger.exception("could not record %d answers to the loop's profiles; their sends will expire "
                                     "unanswered and stay counted", len(batch))
                    return
                time.sleep(0.1 * attempt)
        if lowered or rebalance:
            try:
                self._on_lowered()
            except Exception:  # broker down: the periodic tick will serve it
                logger.warning("could not queue a re-balance after %s", "a lower limit came into force" if lowered
                               else "chargers booted")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
