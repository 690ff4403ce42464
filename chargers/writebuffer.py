"""Group commit for the OCPP hot path: many chargers' writes, one database transaction.

Every charger's frame used to cost several round trips on the single database thread
(message log INSERTs for the frame and its answer, a `last_seen` UPDATE, a charger
SELECT, the samples INSERT, the running figures UPDATE), each its own commit. Here the
consumers hand their writes to one writer per process (per event loop) instead:

1. a consumer submits an item (a log row, a MeterValues request) and, when the charger's
   answer depends on it, awaits it;
2. the writer takes everything submitted so far (at most WRITE_BATCH_MAX items) and
   writes it in one `transaction.atomic()` on the database thread: log rows in one bulk
   INSERT, `last_seen` in one UPDATE, samples in one bulk INSERT;
3. items submitted while a batch is being written form the next batch. The writer writes
   at once when somebody awaits an item (a charger's answer depends on it) or a full batch
   is waiting; when nobody does (log rows, MeterValues answered on receipt, `last_seen`
   touches) it first gathers until the oldest item queued has waited WRITE_LINGER_S: a
   transaction costs about the same for 3 items as for 300. A site of 250 chargers
   otherwise wrote about one transaction per frame (bench_scale, 250 chargers, 250
   MeterValues/s answered on receipt: 2.7 ms of server CPU per MeterValues without the
   linger, 1.5 ms with it; bare Daphne 1.7-1.9), and a busy writer, which chained each
   batch right after the one before, wrote ~120 batches of 10-40 items a second at 5,000
   chargers (1,000 MeterValues/s), its database thread never idle. An item waits at most
   for the linger or the batch in progress, and its own batch; at WRITE_BATCH_MAX items (~0.4 ms
   per MeterValues of 5 samples, less per log row) a batch takes ~0.12 s, so a MeterValues
   sample is in the database within 250 ms of its arrival, where the control loop reads
   the latest `Current.Import`, as long as the offered load stays below the writer's
   capacity (~2,500 MeterValues/s measured). Beyond it the backlog is bounded: a MeterValues
   that finds the oldest queued write waiting WRITE_BEHIND_S is answered once committed, even
   with OCPP_METER_VALUES_ANSWER=received (`WriteBuffer.behind`);
4. if a batch fails, its items are written one by one, so one bad item fails alone (its
   awaiting handler gets the exception, as before batching).

When the web process stops (Daphne on SIGTERM or SIGINT), what the writer holds is written
before the process ends (`flush_at_shutdown`).

What a crash loses: a charger is answered only after the writes its answer depends on
are committed (its MeterValues samples by default, a refused frame's CALLERROR row), so
nothing a charger was answered for is lost. A crash of the process loses the open batch
and what lingers: at most the items submitted in the last linger and batch period, which
are maintenance-log rows, `last_seen` touches (refreshed by the charger's next frame) and,
with OCPP_METER_VALUES_ANSWER=received, samples (of the batch being written and of about
WRITE_BEHIND_S of arrivals behind it: past that, MeterValues are answered once committed).
A disconnect awaits its own log row, which flushes everything the connection submitted before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction

from chargers import services
from chargers.loops import PerLoop, run_at_server_stop
from chargers.ratelimit import ThrottledLog

logger = logging.getLogger(__name__)
_throttled = ThrottledLog(logger, limit=1, window_s=60.0)

# Items per database transaction: bounds one batch's write time (and so the delay of the
# next one) whatever the offered load: ~0.12 s at the measured 0.4 ms per MeterValues.
WRITE_BATCH_MAX = 300

# How long an idle writer gathers items nobody awaits before it writes them (see point 3
# above; OCPP_WRITE_LINGER_MS, 100 ms by default): short beside the control loop's tick (1 s)
# and the 250 ms bound on a sample's delay, long enough for a site of hundreds of chargers
# to fill a batch with many frames.
WRITE_LINGER_S = settings.OCPP_WRITE_LINGER_MS / 1000

# How long the oldest write queued behind the batch being written may wait before the writer is
# behind (`WriteBuffer.behind`; OCPP_WRITE_BEHIND_MS, 5,000 ms by default).
WRITE_BEHIND_S = settings.OCPP_WRITE_BEHIND_MS / 1000
# Writes queued behind the batch being written from which the writer is behind however young
# they are: thirty full batches, 1-3 s of writing (a flood of MeterValues answered at once fills
# a second with more than the writer takes in several).
WRITE_BEHIND_ITEMS = 30 * WRITE_BATCH_MAX


@dataclass(frozen=True)
class LogRow:
    """One row of the maintenance log (the arguments of `services.message_log`)."""

    charge_point_id: str
    charger_pk: int | None
    direction: str
    now: dt.datetime
    message_type: str = ""
    unique_id: str = ""
    action: str = ""
    payload: object = None
    error: str = ""
    touch: bool = False


@dataclass(frozen=True)
class MeterValuesWrite:
    """One MeterValues request (OCPP camelCase `meterValue` list)."""

    charger_pk: int
    connector_id: int
    transaction_id: int | None
    meter_values: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class StatusWrite:
    """One StatusNotification (what `services.connector_statuses_update` takes): in the batch's
    transaction instead of one of its own, a boot storm's ~1,000 a second."""

    charger_pk: int
    connector_id: int
    status: str
    error_code: str
    timestamp: dt.datetime
    info: str = ""
    vendor_id: str = ""
    vendor_error_code: str = ""


Item = LogRow | MeterValuesWrite | StatusWrite


def write_batch(items: Sequence[Item]) -> list[object]:
    """Write `items` in one transaction; on failure one by one. One result per item: the
    item's value (a sample count for MeterValues, None for a log row) or its exception."""
    try:
        with transaction.atomic():
            return _write(items)
    except Exception:  # noqa: BLE001 - isolate the failing item below
        logger.warning("a batch of %d writes failed; writing its items one by one", len(items), exc_info=True)
    results: list[object] = []
    for item in items:
        try:
            with transaction.atomic():
                written = _write([item])
        except Exception as error:  # noqa: BLE001 - handed to the item's waiting handler
            results.append(error)
        else:  # counted only once committed: a foreign key is checked at COMMIT (deferred)
            results.extend(written)
    return results


def _write(items: Sequence[Item]) -> list[object]:
    from transactions import services as tx_services  # the transactions app depends on chargers, not back

    rows = [item for item in items if isinstance(item, LogRow)]
    if rows:
        services.message_log_many(rows=[row.__dict__ for row in rows])
    statuses = [vars(item) for item in items if isinstance(item, StatusWrite)]
    if statuses:
        services.connector_statuses_update(statuses=statuses)
    meter_values = [item for item in items if isinstance(item, MeterValuesWrite)]
    counts = iter(tx_services.meter_values_record_many(requests=[
        tx_services.MeterValuesRequest(item.charger_pk, item.connector_id, item.transaction_id, item.meter_values)
        for item in meter_values
    ]) if meter_values else [])
    return [next(counts) if isinstance(item, MeterValuesWrite) else None for item in items]


class WriteBuffer:
    """The writer of one event loop: submit items, await the ones an answer depends on."""

    def __init__(self) -> None:
        # (item, its waiter, when it was submitted: loop time); a None item only marks a flush point.
        self._items: list[tuple[Item | None, asyncio.Future[object] | None, float]] = []
        # When the oldest of `_items` was submitted (loop time): it lingers no longer than that.
        self._oldest_at = 0.0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writing = False  # a batch taken from `_items` is being written
        self._behind = False  # what `behind` last said (its changes are logged)
        # Set when `_items` holds an item somebody awaits, or a full batch: write without lingering.
        self._urgent = asyncio.Event()

    async def submit(self, item: Item | None, *, wait: bool = True) -> object:
        """Queue `item`; with `wait`, return once it is committed (or raise its error)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future() if wait else None
        now = loop.time()
        if not self._items:
            self._oldest_at = now
        self._items.append((item, future, now))
        if future is not None or len(self._items) >= WRITE_BATCH_MAX:
            self._urgent.set()
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        if future is None:
            return None
        return await future

    def behind(self) -> bool:
        """Whether the oldest write queued behind the batch being written has waited
        WRITE_BEHIND_S, or WRITE_BEHIND_ITEMS are queued: what arrives is not being written as fast.

        Why: a MeterValues answered on receipt (OCPP_METER_VALUES_ANSWER=received) waits for
        nothing, so a charger sends its next one whatever the writer's pace. On a node offered
        more than its writer takes (5,000 chargers at 1,000 MeterValues/s on a machine a third
        as fast as the one the defaults were measured on: bench/bench_scale.py) the backlog grew
        without end: the samples the control loop reads were stored tens of seconds late, and a
        crash would lose all of them. A MeterValues that finds the writer behind is answered once
        committed instead: each charger has one CALL outstanding (OCPP-J 1.6 §4.1.1), so the
        fleet's pace follows the writer's and the backlog stays bounded.

        The bound is 5 s of waiting (or thirty batches queued), not one or two batches: a
        writer near its capacity passes a smaller bound in passing stalls (a collection, the
        other process's SQLite transaction, a checkpoint), and every answer held then makes
        the chargers late. Behind at 1 s, p95 at 1,000 chargers went from 120 ms to 1.7 s on
        that machine; at 5 s it was 48.7 ms. Past the node's capacity
        (5,000 at 1,000/s there) the samples are stored within ~5 s and the answers wait instead.
        The count bounds a flood: chargers whose MeterValues are late send them one after the
        other as each is answered, and a second of those answered at once can be several
        seconds of writing."""
        waited_s = asyncio.get_running_loop().time() - self._items[0][2] if self._items else 0.0
        behind = len(self._items) >= WRITE_BEHIND_ITEMS or waited_s >= WRITE_BEHIND_S
        if behind != self._behind:  # the operator learns when the node runs past its writer, and back
            self._behind = behind
            # At most once a minute each: a writer at its capacity goes behind and back many
            # times a second (seen: a line each, 10 ms apart).
            if behind:
                _throttled.warning("behind", "the database writer is behind (%d writes queued, the oldest for "
                                   "%.1f s): MeterValues are answered once stored until it catches up",
                                   len(self._items), waited_s)
            else:
                _throttled.warning("caught up", "the database writer has caught up: MeterValues are answered on "
                                   "receipt again")
        return behind

    async def flush(self) -> None:
        """Return once everything submitted so far is written, the batch being written included
        (its items have left `_items` already: the mark goes after it)."""
        if self._items or self._writing:
            await self.submit(None, wait=True)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._items:
                await self._linger()
                await self._write_next_batch()

    async def _write_next_batch(self) -> None:
        """Write the next batch and settle its futures. A function of its own so that nothing of
        the batch outlives it: as locals of `_run`, which then waits for more, the last batch's
        rows and payloads stayed alive for as long as the process was quiet."""
        batch, self._items = self._items[:WRITE_BATCH_MAX], self._items[WRITE_BATCH_MAX:]
        if not any(future is not None for _, future, _ in self._items):
            self._urgent.clear()
        items = [item for item, _, _ in batch if item is not None]
        self._writing = True
        try:
            results = await database_sync_to_async(write_batch)(items) if items else []
        except BaseException as error:  # the loop is closing, or the thread failed: tell every waiter
            self._items = batch + self._items
            for _, future, _ in self._items:
                if future is not None and not future.done():
                    future.set_exception(error if isinstance(error, Exception) else RuntimeError("closed"))
            self._items = []
            raise
        finally:
            self._writing = False
        outcomes = iter(results)
        for item, future, _ in batch:
            outcome = None if item is None else next(outcomes)
            if future is None and isinstance(outcome, Exception):
                logger.error("a write nobody waits for failed (%s): %s", type(item).__name__, outcome)
            if future is None or future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _linger(self) -> None:
        """Nobody awaits what is queued: gather more until the oldest item has waited
        WRITE_LINGER_S, unless an awaited item or a full batch comes first."""
        if not self._items or self._urgent.is_set():
            return
        left_s = self._oldest_at + WRITE_LINGER_S - asyncio.get_running_loop().time()
        if left_s <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._urgent.wait(), left_s)


# The writer of the running event loop (one per process under Daphne).
write_buffer = PerLoop(WriteBuffer)


def flush_at_shutdown() -> bool:
    """Under Daphne, write what the buffer holds when the server stops (`run_at_server_stop`).
    Without it the writes gathered in the last linger (up to OCPP_WRITE_LINGER_MS) would be lost
    at every restart. False when there is no reactor (an in-process ASGI test, another server)."""
    return run_at_server_stop(lambda: write_buffer().flush())
