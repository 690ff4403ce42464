"""The OCPP hot path's group commit (chargers.writebuffer): many chargers' writes, one transaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import types
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from ocpp.v16 import call

from chargers.models import Charger, Connector, OcppMessage, RegistrationStatus
from chargers.writebuffer import LogRow, MeterValuesWrite, StatusWrite, WriteBuffer, write_batch
from transactions import services
from transactions.models import MeterSample, Transaction

NOW = dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.UTC)


def _meter_values(at: dt.datetime, wh: int, amps: float) -> list[dict[str, object]]:
    return [{"timestamp": at.isoformat(), "sampledValue": [
        {"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": str(amps), "measurand": "Current.Import", "phase": "L1", "unit": "A"},
    ]}]


@pytest.fixture
def chargers(db) -> list[Charger]:
    return [Charger.objects.create(charge_point_id=f"CP-W{i}", registration_status=RegistrationStatus.ACCEPTED)
            for i in range(3)]


def test_it_writes_log_rows_samples_and_running_figures_of_many_chargers_in_one_batch(chargers) -> None:
    sessions = [services.transaction_start(charger=charger, connector_id=1, id_tag="T", meter_start_wh=1000,
                                           timestamp=NOW, reservation_id=None, now=NOW).transaction_id
                for charger in chargers]
    items: list[LogRow | MeterValuesWrite] = []
    for charger, tx in zip(chargers, sessions, strict=True):
        items.append(LogRow(charger.charge_point_id, charger.pk, "in", NOW, "CALL", "u1", "MeterValues", {}, "",
                            touch=True))
        items.append(MeterValuesWrite(charger.pk, 1, tx, _meter_values(NOW + dt.timedelta(minutes=1), 1500, 16)))
        items.append(MeterValuesWrite(charger.pk, 1, tx, _meter_values(NOW + dt.timedelta(minutes=2), 1800, 15)))

    results = write_batch(items)

    assert results == [None, 2, 2] * 3
    assert OcppMessage.objects.filter(action="MeterValues").count() == 3
    assert MeterSample.objects.count() == 12
    for tx in Transaction.objects.all():
        assert (tx.last_meter_wh, tx.energy_wh) == (1800, 800)
        assert tx.last_sample_at == NOW + dt.timedelta(minutes=2)
    assert set(Charger.objects.values_list("last_seen", flat=True)) == {NOW}


def test_log_rows_touch_their_chargers_and_learn_the_logs_last_id_in_one_statement_on_postgresql(chargers) -> None:
    """On PostgreSQL the rows go by COPY, then one statement both sets the heard chargers'
    `last_seen` and reads the log's largest id for its cap (they were two round trips); on
    SQLite, in-process, the UPDATE and the read stay apart. Either way only the heard change.
    (The cap itself: test_the_message_log_cap_holds_at_every_row.)"""
    from chargers.services import message_log_many

    later = NOW + dt.timedelta(minutes=5)
    rows = [{"now": later, "charge_point_id": charger.charge_point_id, "charger_pk": charger.pk, "direction": "in",
             "message_type": "CALL", "unique_id": f"u{index}", "action": "Heartbeat", "payload": {},
             "touch": index < 2} for index, charger in enumerate(chargers)] * 4
    with CaptureQueriesContext(connection) as queries:
        message_log_many(rows=rows)

    statements = [query["sql"] for query in queries.captured_queries]
    if connection.vendor == "postgresql":
        assert statements[0].startswith('WITH touched AS (UPDATE "chargers_charger"')
        assert not any("ORDER BY" in sql or sql.startswith("UPDATE") for sql in statements)
    else:
        assert not any(sql.startswith("WITH") for sql in statements)
    assert dict(Charger.objects.values_list("charge_point_id", "last_seen")) == {
        "CP-W0": later, "CP-W1": later, "CP-W2": None}
    assert OcppMessage.objects.filter(action="Heartbeat").count() == 12


def test_the_log_cap_learns_this_batchs_last_id_not_a_row_another_process_wrote_since(chargers, monkeypatch) -> None:
    """PostgreSQL: the id the cap is told is the last one this batch's COPY took (the id
    sequence's `currval` in this session). The log's `max(id)`, read before, was a row another
    web process had committed meanwhile, and reaching it walked over every row still
    uncommitted in the other processes' batches."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's COPY path")
    from chargers import services as charger_services

    log_table = OcppMessage._meta.db_table
    rows = [{"now": NOW, "charge_point_id": "CP-W0", "charger_pk": chargers[0].pk, "direction": "in",
             "message_type": "CALL", "unique_id": f"mine-{n}", "action": "Heartbeat", "payload": {}, "touch": True}
            for n in range(3)]
    told: list[int] = []
    real_cap, real_insert = charger_services._message_log_cap, charger_services.insert_rows
    other = connection.get_new_connection(connection.get_connection_params())
    other.autocommit = True

    def copy_then_another_process_commits_a_row(*args: Any, **kwargs: Any) -> None:
        real_insert(*args, **kwargs)
        other.execute(f'INSERT INTO "{log_table}" (timestamp, charge_point_id, direction, message_type, unique_id, '
                      "action, error) VALUES (now(), 'CP-OTHER', 'in', 'CALL', 'theirs', 'Heartbeat', '')")

    def cap(*, first_id: int, last_id: int) -> None:
        told.append(last_id)
        real_cap(first_id=first_id, last_id=last_id)

    monkeypatch.setattr(charger_services, "insert_rows", copy_then_another_process_commits_a_row)
    monkeypatch.setattr(charger_services, "_message_log_cap", cap)
    try:
        charger_services.message_log_many(rows=rows)
    finally:
        theirs = other.execute(f'DELETE FROM "{log_table}" WHERE unique_id = %s RETURNING id', ["theirs"]).fetchone()
        other.close()

    mine = sorted(OcppMessage.objects.filter(unique_id__startswith="mine-").values_list("id", flat=True))
    assert told == [mine[-1]]
    assert theirs is not None and theirs[0] > mine[-1]  # the log's largest id then was theirs


def test_it_fails_only_the_item_that_fails(chargers) -> None:
    good = MeterValuesWrite(chargers[0].pk, 1, None, _meter_values(NOW, 10, 6))
    bad = MeterValuesWrite(chargers[1].pk, 1, None, [{"timestamp": NOW.isoformat(), "sampledValue": 7}])

    results = write_batch([good, bad, good])

    assert results[0] == 2 and results[2] == 2
    assert isinstance(results[1], Exception)
    assert MeterSample.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_a_row_of_a_deleted_charger_fails_alone_at_commit(chargers) -> None:
    """A row of a charger deleted meanwhile (an operator, or the tests' flush between tests)
    breaks its foreign key only at COMMIT (deferred): it alone gets the error, each result
    stays the one of its own item, and the others are written."""
    gone = Charger.objects.create(charge_point_id="CP-GONE")
    gone_pk = gone.pk
    gone.delete()
    items = [LogRow("CP-GONE", gone_pk, "in", NOW, "CALL", "u1", "Heartbeat", touch=True),
             LogRow("CP-W0", chargers[0].pk, "event", NOW, "EVENT", action="connected"),
             MeterValuesWrite(chargers[1].pk, 1, None, _meter_values(NOW, 10, 6))]

    results = write_batch(items)

    assert isinstance(results[0], Exception) and results[1:] == [None, 2]
    assert list(OcppMessage.objects.values_list("action", flat=True)) == ["connected"]
    assert MeterSample.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_it_answers_each_waiter_once_its_item_is_committed(chargers) -> None:
    async def scenario() -> list[object]:
        buffer = WriteBuffer()
        waits = [buffer.submit(MeterValuesWrite(charger.pk, 1, None, _meter_values(NOW, 10, 6)))
                 for charger in chargers]
        await buffer.submit(LogRow("CP-W0", chargers[0].pk, "in", NOW, "CALL", "u9", "Heartbeat"), wait=False)
        counts = await asyncio.gather(*waits)
        await buffer.flush()
        return counts

    assert asyncio.run(scenario()) == [2, 2, 2]
    assert MeterSample.objects.count() == 6
    assert OcppMessage.objects.filter(action="Heartbeat").exists()


@pytest.mark.django_db(transaction=True)
def test_a_failed_write_nobody_waits_for_is_logged_and_the_others_are_written(chargers, caplog) -> None:
    """What OCPP_METER_VALUES_ANSWER=received queues without waiting: a failure cannot reach the
    charger (already answered), so it is logged."""
    async def scenario() -> None:
        buffer = WriteBuffer()
        await buffer.submit(MeterValuesWrite(chargers[0].pk, 1, None, _meter_values(NOW, 10, 6)), wait=False)
        await buffer.submit(MeterValuesWrite(chargers[1].pk, 1, None, [{"timestamp": NOW.isoformat(),
                                                                         "sampledValue": 7}]), wait=False)
        await buffer.submit(MeterValuesWrite(chargers[2].pk, 1, None, _meter_values(NOW, 10, 6)), wait=False)
        await buffer.flush()

    asyncio.run(scenario())
    assert MeterSample.objects.count() == 4
    assert any("a write nobody waits for failed (MeterValuesWrite)" in record.getMessage()
               for record in caplog.records)


def test_status_notifications_share_the_batch_and_an_older_one_never_overwrites_a_newer(chargers) -> None:
    from chargers.models import Connector
    from chargers.writebuffer import StatusWrite

    later, earlier = NOW + dt.timedelta(seconds=5), NOW
    results = write_batch([
        StatusWrite(chargers[0].pk, 1, "Charging", "NoError", later),
        StatusWrite(chargers[0].pk, 1, "Preparing", "NoError", earlier),  # a replay, older
        StatusWrite(chargers[1].pk, 2, "Faulted", "GroundFailure", NOW, info="RCD", vendor_id="Acme"),
        MeterValuesWrite(chargers[1].pk, 2, None, _meter_values(NOW, 10, 6)),
    ])
    assert results == [None, None, None, 2]
    first = Connector.objects.get(charger=chargers[0], connector_id=1)
    assert (first.status, first.status_at) == ("Charging", later)
    second = Connector.objects.get(charger=chargers[1], connector_id=2)
    assert (second.status, second.error_code, second.info, second.vendor_id) == (
        "Faulted", "GroundFailure", "RCD", "Acme")


@pytest.mark.django_db(transaction=True)
def test_a_flush_waits_for_the_batch_being_written(chargers, monkeypatch) -> None:
    """A row queued without waiting may already be in the batch the writer is writing: a flush
    (what a caller does before it learns a charger's answer, whose row is in that batch) returns
    only once that batch is committed, never while it is still being written."""
    import threading

    from chargers import writebuffer

    may_commit = threading.Event()
    committed: list[int] = []

    def slow_write(items: list[object]) -> list[object]:
        may_commit.wait(5)
        committed.append(len(items))
        return [None] * len(items)

    monkeypatch.setattr(writebuffer, "write_batch", slow_write)
    row = LogRow("CP-W0", chargers[0].pk, "in", NOW, "CALLERROR", "u1", "Reset", {}, "FormatViolation: x")

    async def scenario() -> list[int]:
        buffer = WriteBuffer()
        await buffer.submit(row, wait=False)
        await asyncio.sleep(writebuffer.WRITE_LINGER_S + 0.1)  # the writer has taken the row: it is being written
        flushed = asyncio.ensure_future(buffer.flush())
        await asyncio.sleep(0.05)
        assert not flushed.done()  # the row is not committed yet
        may_commit.set()
        await asyncio.wait_for(flushed, 5)
        return list(committed)

    assert asyncio.run(scenario()) == [1]


def _recording_batches(monkeypatch) -> list[int]:
    from chargers import writebuffer

    sizes: list[int] = []

    def recorded(items: list[object]) -> list[object]:
        sizes.append(len(items))
        return [None] * len(items)

    monkeypatch.setattr(writebuffer, "write_batch", recorded)
    return sizes


def _row(unique_id: str) -> LogRow:
    return LogRow("CP-W0", None, "in", NOW, "CALL", unique_id, "Heartbeat")


@pytest.mark.django_db(transaction=True)
def test_writes_nobody_awaits_are_gathered_into_one_batch(monkeypatch) -> None:
    """Log rows and MeterValues answered on receipt: an idle writer waits for more before it
    writes (one transaction for a site's many frames, not one per frame)."""
    from chargers import writebuffer

    sizes = _recording_batches(monkeypatch)
    monkeypatch.setattr(writebuffer, "WRITE_LINGER_S", 0.5)

    async def scenario() -> None:
        buffer = WriteBuffer()
        for number in range(5):
            await buffer.submit(_row(f"u{number}"), wait=False)
            await asyncio.sleep(0.01)
        assert sizes == []  # still gathering
        await asyncio.sleep(0.7)

    asyncio.run(scenario())
    assert sizes == [5]


@pytest.mark.django_db(transaction=True)
def test_a_quiet_writer_keeps_nothing_of_its_last_batch(monkeypatch) -> None:
    """Once a batch is written, the writer waiting for more holds none of its items (rows,
    payloads): they stayed alive for as long as the process was quiet."""
    import gc
    import weakref

    _recording_batches(monkeypatch)

    async def scenario() -> tuple[list[weakref.ref[LogRow]], asyncio.Task[None] | None]:
        buffer = WriteBuffer()
        rows = [_row(f"u{number}") for number in range(5)]
        for row in rows[:-1]:
            await buffer.submit(row, wait=False)
        await buffer.submit(rows[-1])  # awaited: the batch is written now
        await asyncio.sleep(0)  # the writer back to waiting for more
        watched = [weakref.ref(row) for row in rows]
        del rows, row
        gc.collect()
        return [ref for ref in watched if ref() is not None], buffer._task

    alive, task = asyncio.run(scenario())
    assert task is not None and alive == []


@pytest.mark.django_db(transaction=True)
def test_writes_arriving_while_a_batch_is_written_linger_too_but_no_longer_than_the_linger(monkeypatch) -> None:
    """A busy writer used to chain its batches: what arrived while one was written went as soon
    as it committed, a few items at a time, each batch with a transaction's cost, and the
    database thread never rested. The linger now counts from the oldest item queued."""
    from chargers import writebuffer

    linger_s, write_s, count = 0.3, 0.03, 150
    monkeypatch.setattr(writebuffer, "WRITE_LINGER_S", linger_s)
    submitted: dict[str, float] = {}
    waited: list[float] = []
    sizes: list[int] = []

    def slow_write(items: list[LogRow]) -> list[object]:
        time.sleep(write_s)
        sizes.append(len(items))
        waited.extend(time.monotonic() - submitted[item.unique_id] for item in items)
        return [None] * len(items)

    monkeypatch.setattr(writebuffer, "write_batch", slow_write)

    async def scenario() -> None:
        buffer = WriteBuffer()
        for number in range(count):  # one every ~6 ms for ~0.9 s
            submitted[f"u{number}"] = time.monotonic()
            await buffer.submit(_row(f"u{number}"), wait=False)
            await asyncio.sleep(0.006)
        await asyncio.wait_for(buffer.flush(), 5)

    asyncio.run(scenario())
    assert sum(sizes) == count
    assert len(sizes) <= 6, sizes  # a batch per linger, and the flush's (chained: ~25 batches)
    assert max(waited) < 2 * linger_s  # the linger, the batch being written and its own


@pytest.mark.django_db(transaction=True)
def test_an_awaited_item_is_written_at_once_with_what_was_gathered(monkeypatch) -> None:
    """A charger's answer waiting on a write (or a flush) never waits for the linger."""
    from chargers import writebuffer

    sizes = _recording_batches(monkeypatch)
    monkeypatch.setattr(writebuffer, "WRITE_LINGER_S", 60)

    async def scenario() -> None:
        buffer = WriteBuffer()
        await buffer.submit(_row("u1"), wait=False)
        await asyncio.sleep(0.01)
        await asyncio.wait_for(buffer.submit(_row("u2")), 5)
        await buffer.submit(_row("u3"), wait=False)
        await asyncio.wait_for(buffer.flush(), 5)

    asyncio.run(scenario())
    assert sizes == [2, 1]


@pytest.mark.django_db(transaction=True)
def test_a_full_batch_is_written_without_lingering(monkeypatch) -> None:
    from chargers import writebuffer

    sizes = _recording_batches(monkeypatch)
    monkeypatch.setattr(writebuffer, "WRITE_LINGER_S", 60)
    monkeypatch.setattr(writebuffer, "WRITE_BATCH_MAX", 4)

    async def scenario() -> None:
        buffer = WriteBuffer()
        for number in range(4):
            await buffer.submit(_row(f"u{number}"), wait=False)
        for _ in range(100):
            if sizes:
                return
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert sizes == [4]


def _status(charger: Charger, connector: int, status: str, minute: int) -> StatusWrite:
    return StatusWrite(charger.pk, connector, status, "NoError", NOW + dt.timedelta(minutes=minute))


def _statuses() -> dict[tuple[str, int], tuple[str, dt.datetime | None]]:
    return {(row.charger.charge_point_id, row.connector_id): (row.status, row.status_at)
            for row in Connector.objects.select_related("charger")}


def test_a_batch_of_statuses_leaves_what_applying_them_one_by_one_would(chargers, django_assert_max_num_queries):
    first, second, third = chargers
    Connector.objects.create(charger=second, connector_id=1, status="Charging", status_at=NOW + dt.timedelta(minutes=5))
    Connector.objects.create(charger=third, connector_id=1, status="Preparing", status_at=NOW)
    items = [
        _status(first, 1, "Preparing", 2), _status(first, 1, "Available", 1),  # older after newer: ignored
        _status(first, 2, "Available", 1), _status(first, 2, "Faulted", 1),  # same time: the last wins
        _status(second, 1, "Available", 3),  # older than what is stored: ignored
        _status(third, 1, "Charging", 4), _status(third, 0, "Available", 0),
    ]
    with django_assert_max_num_queries(8):  # not five per status
        assert write_batch(items) == [None] * len(items)
    assert _statuses() == {
        ("CP-W0", 1): ("Preparing", NOW + dt.timedelta(minutes=2)),
        ("CP-W0", 2): ("Faulted", NOW + dt.timedelta(minutes=1)),
        ("CP-W1", 1): ("Charging", NOW + dt.timedelta(minutes=5)),
        ("CP-W2", 1): ("Charging", NOW + dt.timedelta(minutes=4)),
        ("CP-W2", 0): ("Available", NOW),
    }


def test_statuses_of_stored_connectors_cost_the_same_statements_however_many(chargers):
    """A reconnect storm's StatusNotifications: one SELECT and one UPDATE statement run per row,
    for one connector as for thirty, each written under the rule."""
    def stored_statuses(count: int) -> list[StatusWrite]:
        for connector in range(1, count + 1):
            Connector.objects.update_or_create(charger=chargers[0], connector_id=connector,
                                               defaults={"status": "Available", "status_at": NOW})
        return [_status(chargers[0], connector, "Charging", connector % 3 - 1) for connector in range(1, count + 1)]

    batch = stored_statuses(1)
    with CaptureQueriesContext(connection) as one:
        write_batch(batch)
    batch = stored_statuses(30)
    with CaptureQueriesContext(connection) as thirty:
        write_batch(batch)
    assert len(thirty) == len(one)
    assert {connector: status for (_, connector), (status, _) in _statuses().items()} == {
        connector: "Charging" if connector % 3 != 0 else "Available" for connector in range(1, 31)}  # older: kept


def test_a_newer_status_another_process_writes_meanwhile_is_kept(chargers, monkeypatch):
    from chargers import services as charger_services

    first = chargers[0]
    Connector.objects.create(charger=first, connector_id=1, status="Preparing", status_at=NOW)
    Connector.objects.create(charger=first, connector_id=2, status="Preparing", status_at=NOW)
    real_write = charger_services._write_known_statuses

    def another_process_first(updates):  # its newer status of connector 1 lands between SELECT and UPDATE
        Connector.objects.filter(charger=first, connector_id=1).update(status="Finishing",
                                                                        status_at=NOW + dt.timedelta(minutes=9))
        return real_write(updates)

    monkeypatch.setattr(charger_services, "_write_known_statuses", another_process_first)
    write_batch([_status(first, connector, "Charging", 2) for connector in (1, 2)])
    assert _statuses() == {
        ("CP-W0", 1): ("Finishing", NOW + dt.timedelta(minutes=9)),  # newer than ours: kept
        ("CP-W0", 2): ("Charging", NOW + dt.timedelta(minutes=2)),
    }


def test_a_connector_another_process_inserted_meanwhile_keeps_the_rule(chargers, monkeypatch):
    from chargers import services as charger_services

    first = chargers[0]
    real_insert_new = charger_services.insert_new

    def another_process_first(model, rows, **kwargs):  # its newer status lands between SELECT and INSERT
        Connector.objects.create(charger=first, connector_id=1, status="Charging",
                                 status_at=NOW + dt.timedelta(minutes=9))
        Connector.objects.create(charger=first, connector_id=2, status="Faulted", status_at=NOW)
        return real_insert_new(model, rows, **kwargs)

    monkeypatch.setattr(charger_services, "insert_new", another_process_first)
    write_batch([_status(first, connector, "Available", 1) for connector in (1, 2, 3)])
    assert _statuses() == {
        ("CP-W0", 1): ("Charging", NOW + dt.timedelta(minutes=9)),  # newer than ours: kept
        ("CP-W0", 2): ("Available", NOW + dt.timedelta(minutes=1)),  # older than ours: overwritten
        ("CP-W0", 3): ("Available", NOW + dt.timedelta(minutes=1)),
    }


def test_what_the_writer_gathered_is_written_when_daphne_stops(servers, transactional_db) -> None:
    """SIGTERM right after frames whose log rows nobody waits for: Daphne writes them before it
    ends, instead of losing the writes of the last linger at every restart."""
    import json
    import signal
    import subprocess
    import sys

    from tests.conftest import BASE_DIR, wait_for_port
    from tests.embedded_services import free_port
    from tests.ocpp_sim import ChargerSim

    Charger.objects.create(charge_point_id="CP-STOP", registration_status=RegistrationStatus.ACCEPTED)
    port = free_port()
    daphne = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                               "evce.asgi:application"], cwd=BASE_DIR,
                              env={**servers.env, "OCPP_WRITE_LINGER_MS": "250"})
    sim = ChargerSim(f"ws://127.0.0.1:{port}", "CP-STOP")
    try:
        wait_for_port(port, daphne)
        sim.connect()
        sim.boot()
        sim.call(call.Heartbeat())  # the boot's own steps are over once this is answered
        for n in range(3):
            sim.send_raw(json.dumps([2, f"last-{n}", "Heartbeat", {}]))
            assert sim.recv_raw_response().unique_id == f"last-{n}"
        daphne.send_signal(signal.SIGTERM)  # well within the 250 ms the writer lingers
        assert daphne.wait(20) == 0
    finally:
        sim.close()
        if daphne.poll() is None:
            daphne.kill()
    logged = OcppMessage.objects.filter(charge_point_id="CP-STOP", unique_id__startswith="last-")
    assert sorted(logged.values_list("unique_id", "message_type")) == [
        (f"last-{n}", kind) for n in range(3) for kind in ("CALL", "CALLRESULT")]


def test_a_connection_writes_last_seen_at_most_once_per_resolution(monkeypatch) -> None:
    """Each frame heard used to update the charger's row; now the first frame after
    LAST_SEEN_RESOLUTION_S does (the connection's own record counts as an update)."""
    from chargers import consumers
    from chargers.services import LAST_SEEN_RESOLUTION_S

    clock = {"now": 1000.0}
    rows: list[LogRow] = []

    class FakeBuffer:
        async def submit(self, item: LogRow, *, wait: bool = True) -> None:
            rows.append(item)

    monkeypatch.setattr(consumers, "write_buffer", FakeBuffer)
    monkeypatch.setattr(consumers, "time", types.SimpleNamespace(monotonic=lambda: clock["now"]))
    consumer = consumers.OcppConsumer()
    consumer.charge_point_id, consumer.charger_pk = "CP-T", 7
    consumer._last_seen_at = clock["now"]  # as connect() leaves it, once the connection is recorded

    async def heard(at: float, direction: str = "in") -> None:
        clock["now"] = at
        await consumer.log_frame(direction, [2, f"m{at}", "Heartbeat", {}])

    async def scenario() -> None:
        await heard(1001.0)
        await heard(1000.0 + LAST_SEEN_RESOLUTION_S - 0.5)
        await heard(1000.0 + LAST_SEEN_RESOLUTION_S + 0.5)  # due: written
        await heard(1000.0 + LAST_SEEN_RESOLUTION_S + 1.0)
        await heard(1000.0 + 3 * LAST_SEEN_RESOLUTION_S, direction="out")  # our frames never touch
        await heard(1000.0 + 3 * LAST_SEEN_RESOLUTION_S + 1)

    asyncio.run(scenario())
    assert [row.touch for row in rows] == [False, False, True, False, False, True]


@pytest.mark.django_db
def test_the_offline_check_allows_for_the_lag_of_last_seen(settings) -> None:
    from chargers.services import LAST_SEEN_RESOLUTION_S, chargers_mark_silent_offline

    settings.OCPP_OFFLINE_AFTER_HEARTBEATS = 3
    silence = dt.timedelta(seconds=3 * 60)
    lag = dt.timedelta(seconds=LAST_SEEN_RESOLUTION_S)
    for name, quiet_for in (("CP-LAGGING", silence + lag / 2), ("CP-GONE", silence + lag * 1.5)):
        Charger.objects.create(charge_point_id=name, connected=True, channel_name=name, heartbeat_interval_s=60,
                               last_seen=NOW - quiet_for)
    assert chargers_mark_silent_offline(now=NOW) == ["CP-GONE"]


def _stuck_writer(monkeypatch, **bounds: float) -> threading.Event:
    """The writer's batches wait for the returned event (the database takes nothing); no linger;
    `bounds` set the module's WRITE_BEHIND_S / WRITE_BEHIND_ITEMS; its log throttle starts afresh."""
    from chargers import writebuffer
    from chargers.ratelimit import ThrottledLog

    monkeypatch.setattr(writebuffer, "WRITE_LINGER_S", 0.0)
    monkeypatch.setattr(writebuffer, "_throttled", ThrottledLog(writebuffer.logger, limit=1, window_s=60.0))
    for name, value in bounds.items():
        monkeypatch.setattr(writebuffer, name, value)
    released = threading.Event()

    def stuck_write(items: list[LogRow]) -> list[object]:
        released.wait(10)
        return [None] * len(items)

    monkeypatch.setattr(writebuffer, "write_batch", stuck_write)
    return released


async def _first_batch_being_written(buffer: WriteBuffer) -> None:
    """Submit one write and return once its batch is being written (taken: not queued)."""
    await buffer.submit(_row("first"), wait=False)
    for _ in range(500):
        if buffer._writing:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the first batch was never taken")


@pytest.mark.django_db(transaction=True)
def test_the_writer_is_behind_once_its_oldest_queued_write_has_waited_the_bound(monkeypatch, caplog) -> None:
    released = _stuck_writer(monkeypatch, WRITE_BEHIND_S=0.2)

    async def scenario() -> list[bool]:
        buffer = WriteBuffer()
        behind = [buffer.behind()]  # nothing queued
        await _first_batch_being_written(buffer)
        behind.append(buffer.behind())  # a batch being written, nothing behind it
        await buffer.submit(_row("q1"), wait=False)
        behind.append(buffer.behind())  # queued just now
        await asyncio.sleep(0.25)
        behind.append(buffer.behind())  # queued 0.25 s ago
        await buffer.submit(_row("q2"), wait=False)
        behind.append(buffer.behind())  # a young one does not hide the old one
        released.set()
        await asyncio.wait_for(buffer.flush(), 10)
        behind.append(buffer.behind())  # written: caught up
        await buffer.submit(_row("q3"), wait=False)
        behind.append(buffer.behind())
        return behind

    assert asyncio.run(scenario()) == [False, False, False, True, True, False, False]
    said = [record.getMessage() for record in caplog.records if record.name == "chargers.writebuffer"]
    assert len(said) == 2  # once when it fell behind, once when it caught up: not per question
    assert said[0].startswith("the database writer is behind (1 writes queued, the oldest for ")
    assert said[1].startswith("the database writer has caught up")


@pytest.mark.django_db(transaction=True)
def test_a_writer_going_behind_and_back_again_and_again_says_so_once_a_minute(monkeypatch, caplog) -> None:
    released = _stuck_writer(monkeypatch, WRITE_BEHIND_S=60.0, WRITE_BEHIND_ITEMS=2)

    async def scenario() -> None:
        buffer = WriteBuffer()
        await _first_batch_being_written(buffer)
        for number in range(5):  # behind with two queued, caught up once they are taken
            await buffer.submit(_row(f"a{number}"), wait=False)
            await buffer.submit(_row(f"b{number}"), wait=False)
            assert buffer.behind() is True
            buffer._items.clear()  # as if taken into the batch being written
            assert buffer.behind() is False
        released.set()

    asyncio.run(scenario())
    said = [record.getMessage() for record in caplog.records if record.name == "chargers.writebuffer"]
    assert len(said) == 2, said  # ten changes, one line of each kind


@pytest.mark.django_db(transaction=True)
def test_the_writer_is_behind_once_too_many_writes_are_queued_however_young(monkeypatch) -> None:
    released = _stuck_writer(monkeypatch, WRITE_BEHIND_S=60.0, WRITE_BEHIND_ITEMS=5)

    async def scenario() -> list[bool]:
        buffer = WriteBuffer()
        await _first_batch_being_written(buffer)
        behind = []
        for number in range(6):
            behind.append(buffer.behind())
            await buffer.submit(_row(f"q{number}"), wait=False)
        behind.append(buffer.behind())
        released.set()
        await asyncio.wait_for(buffer.flush(), 10)
        behind.append(buffer.behind())
        return behind

    assert asyncio.run(scenario()) == [False] * 5 + [True, True, False]


@pytest.mark.django_db(transaction=True)
def test_a_batch_whose_connection_the_database_dropped_is_written_again_on_a_new_one(chargers, caplog) -> None:
    """PostgreSQL restarted (or a proxy dropped the connection) after this database call's
    health check: the batch fails, and its items, written one by one, get a new connection
    (Django drops a connection whose rollback failed) instead of failing in turn on the broken one."""
    import psycopg
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a server-side drop of the connection")
    assert Charger.objects.count() == 3  # the connection is open and its health check done
    backend_pid = connection.connection.info.backend_pid
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [backend_pid])
    items = [MeterValuesWrite(charger.pk, 1, None, _meter_values(NOW, 10, 6)) for charger in chargers]

    assert write_batch(items) == [2, 2, 2]
    assert "a batch of 3 writes failed" in caplog.text
    assert MeterSample.objects.count() == 6
    assert connection.connection.info.backend_pid != backend_pid
