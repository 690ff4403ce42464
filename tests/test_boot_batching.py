"""A reconnect storm's per-charger boot work, batched: safe defaults and reboot closes.

Chargers booting together get their safe defaults recorded as pending in one transaction (before
any is sent), their answers recorded through the answer recorder (one re-balance), and their
forgotten sessions closed in one transaction, with the figures a close one by one writes and a
StopTransaction recorded meanwhile winning.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Sequence
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chargers.batcher import Batcher
from chargers.commands import ChargerCallError
from chargers.models import Charger, ConfigurationKey
from loadmgmt import control
from loadmgmt.answers import AnswerRecorder
from loadmgmt.models import AnswerStatus, LimitState
from loadmgmt.profiles import RATE_UNIT_KEY
from tests.conftest import wait_until
from transactions import services as tx_services
from transactions.models import ClosedBy, MeterSample, Transaction, TransactionState

# The boot: just after the sessions are created (their creation time is the real clock's).
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=1)


# --- the batcher ------------------------------------------------------------------------------


@pytest.mark.django_db  # the database thread's hop closes obsolete connections
def test_keys_submitted_together_run_in_one_call_and_each_gets_its_result():
    calls: list[list[int]] = []

    def run(keys: Sequence[int]) -> dict[int, int]:
        calls.append(list(keys))
        return {key: key * 2 for key in keys}

    async def storm() -> list[int]:
        batcher = Batcher(run)
        return await asyncio.gather(*(batcher.submit(key) for key in [*range(10), 3]))

    assert asyncio.run(storm()) == [*(key * 2 for key in range(10)), 6]
    assert calls == [list(range(10))]  # one call, each key once


class _Result:
    """A batch's result that can be watched for being freed (weakref)."""


@pytest.mark.django_db
def test_a_quiet_batcher_keeps_nothing_of_its_last_batch():
    """Once the waiters have their results, the batcher waiting for its next batch holds none of
    the last one's futures or results: after a boot storm, every booted charger's stayed alive
    in each of a process's batchers until the next batch."""
    import gc
    import weakref

    def run(keys: Sequence[int]) -> dict[int, _Result]:
        return {key: _Result() for key in keys}

    async def storm() -> tuple[Batcher[int, _Result], list[weakref.ref[_Result]]]:
        batcher: Batcher[int, _Result] = Batcher(run)
        results = await asyncio.gather(*(batcher.submit(key) for key in range(20)))
        await asyncio.sleep(0)  # the batcher back to waiting for the next batch
        assert batcher._task is not None and not batcher._task.done()
        watched = [weakref.ref(result) for result in results]
        del results
        gc.collect()
        return batcher, [ref for ref in watched if ref() is not None]

    batcher, alive = asyncio.run(storm())
    assert batcher.batches == 1 and alive == []


@pytest.mark.django_db
def test_a_batch_is_bounded_and_a_failing_key_fails_alone():
    calls: list[list[int]] = []

    def run(keys: Sequence[int]) -> dict[int, str]:
        calls.append(list(keys))
        if 7 in keys:
            raise ValueError("bad key 7")
        return {key: f"ok {key}" for key in keys}

    async def storm() -> list[Any]:
        batcher = Batcher(run, max_batch=4)
        return await asyncio.gather(*(batcher.submit(key) for key in range(10)), return_exceptions=True)

    results = asyncio.run(storm())
    assert [r for r in results if isinstance(r, Exception)] == [results[7]]
    assert str(results[7]) == "bad key 7"
    assert results[8] == "ok 8"
    assert calls[:2] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # the second batch failed: then one by one
    assert [4] in calls and [7] in calls and calls[-1] == [8, 9]


# --- safe defaults at boot ----------------------------------------------------------------------


def _chargers(count: int, prefix: str = "CP-B") -> list[Charger]:
    Charger.objects.bulk_create([Charger(charge_point_id=f"{prefix}{n:03d}", registration_status="accepted", phases=3)
                                 for n in range(count)])
    return list(Charger.objects.filter(charge_point_id__startswith=prefix).order_by("pk"))


@pytest.mark.django_db
def test_the_defaults_of_chargers_booting_together_are_recorded_pending_in_a_few_statements():
    chargers = _chargers(6)
    LimitState.objects.create(charger=chargers[0], connector_id=0, purpose="TxDefaultProfile", wanted_a=16.0,
                              in_force_a=10.0, sent_seq=4)
    LimitState.objects.create(charger=chargers[1], connector_id=0, purpose="TxDefaultProfile", wanted_a=8.0,
                              in_force_a=10.0)
    pks = [charger.pk for charger in chargers]
    gone = max(pks) + 100
    with CaptureQueriesContext(connection) as queries:
        planned = control.record_boot_defaults([*pks, gone])
    assert planned[gone] is None
    limits = {pk: planned[pk][0].limit_a for pk in pks}  # type: ignore[index]
    assert limits == {pks[0]: 10.0, pks[1]: 8.0, **dict.fromkeys(pks[2:], 0.0)}  # never raised; unknown: 0 A
    ticket, payload = planned[pks[0]]  # type: ignore[misc]
    profile: Any = payload["csChargingProfiles"]
    assert ticket.seq == 5 and payload["connectorId"] == 0
    assert profile["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 10.0
    rows = {row.charger_id: row for row in LimitState.objects.filter(connector_id=0)}
    assert set(rows) == set(pks)  # the missing rows were created
    for pk in pks:  # pending before anything is sent: counted as held until answered
        assert rows[pk].pending_a == limits[pk] and rows[pk].pending_deadline is not None
        assert rows[pk].sent_seq == planned[pk][0].seq  # type: ignore[index]
    # A fixed number of statements, whatever the number of chargers (the first also created the settings).
    assert len(queries) <= 20
    many = [charger.pk for charger in _chargers(60, prefix="CP-M")]
    with CaptureQueriesContext(connection) as more:
        control.record_boot_defaults(many)
    assert len(more) <= len(queries)


@pytest.mark.django_db(transaction=True)  # the record's transaction is the outermost, as in a web process
def test_a_batch_of_reboots_records_its_defaults_in_a_few_round_trips_in_each_chargers_unit():
    many = [charger.pk for charger in _chargers(60, prefix="CP-R")]
    ConfigurationKey.objects.create(charger_id=many[0], key=RATE_UNIT_KEY, value="Power")  # takes watts only
    ConfigurationKey.objects.create(charger_id=many[1], key=RATE_UNIT_KEY, value="Current,Power")
    control.record_boot_defaults(many)
    with CaptureQueriesContext(connection) as again:  # a reboot of the same chargers: their rows exist
        planned = control.record_boot_defaults(many)
    units = {pk: planned[pk][1]["csChargingProfiles"]["chargingSchedule"]["chargingRateUnit"]  # type: ignore[index]
             for pk in many}
    assert units == {**dict.fromkeys(many, "A"), many[0]: "W"}
    statements = [query["sql"] for query in again.captured_queries]
    # Each round trip waits on the database thread: the chargers and their rate units are read
    # together, the rows locked once, and no savepoint is taken inside the one transaction.
    assert sum("chargers_charger" in sql for sql in statements) == 1
    assert sum("FOR UPDATE" in sql for sql in statements) == int(connection.features.has_select_for_update)
    assert not [sql for sql in statements if "SAVEPOINT" in sql]
    # chargers, settings, BEGIN, rows, an UPDATE per distinct limit and unit (A and W), sequence numbers, COMMIT
    assert len(statements) <= 8, statements


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch):
    """The loop's answer recorder, with re-balance requests counted instead of queued."""
    import loadmgmt.tasks
    from loadmgmt import services as loop_services

    asked: list[int] = []
    recorder = AnswerRecorder(on_lowered=lambda: asked.append(1))
    monkeypatch.setattr(loadmgmt.tasks, "ANSWERS", recorder)
    record = loop_services.limit_answers_record
    recorder.batch_sizes = []  # type: ignore[attr-defined]

    def counted(batch: Any, **kwargs: Any) -> Any:
        recorder.batch_sizes.append(len(batch))  # type: ignore[attr-defined]
        return record(batch, **kwargs)

    monkeypatch.setattr(loop_services, "limit_answers_record", counted)
    yield recorder, asked
    recorder.stop()


@pytest.mark.django_db(transaction=True)
def test_a_booting_chargers_default_is_pending_when_sent_and_its_answer_is_recorded(answers):
    recorder, asked = answers
    chargers = _chargers(4)
    for charger in chargers:
        LimitState.objects.create(charger=charger, connector_id=0, purpose="TxDefaultProfile", wanted_a=16.0,
                                  in_force_a=12.0)
    seen_when_sent: dict[int, Any] = {}
    replies: dict[int, Any] = {chargers[0].pk: {"status": "Accepted"}, chargers[1].pk: {"status": "Rejected"},
                               chargers[2].pk: TimeoutError("no answer"),
                               chargers[3].pk: ChargerCallError("NotImplemented", "no profiles")}

    def caller(pk: int):
        async def call(action: str, payload: dict[str, Any]) -> dict[str, Any]:
            assert action == "SetChargingProfile"
            seen_when_sent[pk] = await database_sync_to_async(
                lambda: LimitState.objects.values("pending_a", "pending_max_a").get(charger_id=pk, connector_id=0))()
            reply = replies[pk]
            if isinstance(reply, Exception):
                raise reply
            return reply
        return call

    async def boot_together() -> None:
        batches_before = control.boot_defaults().batches
        await asyncio.gather(*(control.boot_step_safe_default(caller(c.pk), c.pk) for c in chargers))
        assert control.boot_defaults().batches - batches_before == 1  # one transaction for the four

    asyncio.run(boot_together())
    assert all(seen == {"pending_a": 12.0, "pending_max_a": 12.0} for seen in seen_when_sent.values())
    wait_until(recorder.idle)
    rows = {row.charger_id: row for row in LimitState.objects.filter(connector_id=0)}
    accepted, rejected, timed_out, refused = (rows[c.pk] for c in chargers)
    assert (accepted.in_force_a, accepted.pending_a, accepted.last_status) == (12.0, None, AnswerStatus.ACCEPTED)
    assert (rejected.in_force_a, rejected.last_status) == (12.0, AnswerStatus.REJECTED)
    assert refused.last_status == AnswerStatus.CALL_ERROR
    # No answer: it may have been applied, so it stays counted (the safe side).
    assert (timed_out.last_status, timed_out.pending_max_a) == (AnswerStatus.NO_ANSWER, 12.0)
    assert timed_out.held_a == 12.0
    # One re-balance per batch of answers recorded (however the four arrived), not one per answer.
    assert sum(recorder.batch_sizes) == 4
    assert 1 <= len(asked) <= len(recorder.batch_sizes)


# --- sessions closed after a reboot ------------------------------------------------------------


def _session(charger: Charger, *, samples: int = 3, created_before_boot: bool = True) -> Transaction:
    tx = Transaction.objects.create(charger=charger, connector_id=1, id_tag="T", meter_start_wh=1000,
                                    start_time=NOW - dt.timedelta(minutes=30))
    MeterSample.objects.bulk_create([
        MeterSample(charger=charger, connector_id=1, transaction=tx, timestamp=NOW - dt.timedelta(minutes=20 - n),
                    measurand=measurand, unit=unit, value=value, raw_value=str(value))
        for n in range(samples)
        for measurand, unit, value in (("Energy.Active.Import.Register", "Wh", 1000 + 300 * (n + 1)),
                                       ("Power.Active.Import", "W", 5000 + 100 * n))
    ])
    if samples:  # the running figures, as the meter values kept them
        Transaction.objects.filter(pk=tx.pk).update(last_meter_wh=1000 + 300 * samples,
                                                    last_sample_at=NOW - dt.timedelta(minutes=21 - samples))
    if not created_before_boot:
        Transaction.objects.filter(pk=tx.pk).update(created_at=NOW + dt.timedelta(minutes=1))
    return tx


FIGURES = ("state", "closed_by", "stop_reason", "stop_time", "meter_stop_wh", "energy_wh", "last_meter_wh",
           "last_sample_at", "peak_power_w")


@pytest.mark.django_db
def test_chargers_rebooting_together_have_their_sessions_closed_as_one_by_one():
    chargers = _chargers(5)
    Charger.objects.filter(pk__in=[c.pk for c in chargers[:4]]).update(last_boot_at=NOW)
    alone = _session(chargers[0])
    together = [_session(chargers[1]), _session(chargers[2], samples=0)]
    after_boot = _session(chargers[3], created_before_boot=False)  # a start replayed after the boot: kept open
    never_booted = _session(chargers[4])
    assert tx_services.transactions_close_after_reboot(charger_pk=chargers[0].pk) == [alone.pk]
    twin = _session(chargers[0])  # the same session again, closed by the batch
    with CaptureQueriesContext(connection) as queries:
        closed = tx_services.transactions_close_after_reboot_many(charger_pks=[c.pk for c in chargers])
    assert closed == {chargers[0].pk: [twin.pk], chargers[1].pk: [together[0].pk], chargers[2].pk: [together[1].pk],
                      chargers[3].pk: [], chargers[4].pk: []}
    # find; savepoint, read, energy/power samples, latest samples, one UPDATE for all, release
    assert len(queries) <= 7
    one, batched = (Transaction.objects.values(*FIGURES).get(pk=pk) for pk in (alone.pk, twin.pk))
    assert batched == one
    assert (one["closed_by"], one["stop_reason"], one["energy_wh"], one["peak_power_w"]) == (
        ClosedBy.SYSTEM, tx_services.REASON_REBOOTED, 900, 5200.0)
    empty = Transaction.objects.get(pk=together[1].pk)
    assert (empty.stop_time, empty.state) == (NOW, TransactionState.COMPLETED)  # no reading: the boot's time
    assert Transaction.objects.get(pk=after_boot.pk).state == TransactionState.ACTIVE
    assert Transaction.objects.get(pk=never_booted.pk).state == TransactionState.ACTIVE


@pytest.mark.django_db
def test_nothing_to_close_costs_one_query_for_the_whole_batch():
    chargers = _chargers(50)
    Charger.objects.update(last_boot_at=NOW)
    with CaptureQueriesContext(connection) as queries:
        closed = tx_services.transactions_close_after_reboot_many(charger_pks=[c.pk for c in chargers])
    assert closed == {c.pk: [] for c in chargers}
    assert len(queries) == 1


@pytest.mark.django_db
def test_a_stop_transaction_recorded_while_the_reboot_close_runs_wins(monkeypatch: pytest.MonkeyPatch):
    chargers = _chargers(2)
    Charger.objects.update(last_boot_at=NOW)
    raced, other = _session(chargers[0]), _session(chargers[1])
    stop_time = NOW - dt.timedelta(minutes=2)
    energy = tx_services.session_energy

    def stop_arrives_meanwhile(**kwargs: Any) -> Any:
        # The charger's StopTransaction lands after the sessions were read, before they are written.
        Transaction.objects.filter(pk=raced.pk).update(state=TransactionState.COMPLETED, closed_by=ClosedBy.CHARGER,
                                                       stop_reason="Local", stop_time=stop_time, meter_stop_wh=2500)
        return energy(**kwargs)

    monkeypatch.setattr(tx_services, "session_energy", stop_arrives_meanwhile)
    tx_services.transactions_close_after_reboot_many(charger_pks=[c.pk for c in chargers])
    record = Transaction.objects.get(pk=raced.pk)
    assert (record.closed_by, record.stop_reason, record.stop_time, record.meter_stop_wh) == (
        ClosedBy.CHARGER, "Local", stop_time, 2500)
    assert Transaction.objects.get(pk=other.pk).closed_by == ClosedBy.SYSTEM
    # A stop already recorded before the close: the session is not even read as open.
    assert tx_services.transactions_close_after_reboot_many(charger_pks=[chargers[0].pk]) == {chargers[0].pk: []}


# --- the automatic configuration's reads --------------------------------------------------------


@pytest.mark.django_db
def test_the_configuration_reads_of_chargers_booting_together_are_two_queries():
    from chargers.configuration import _wanted_and_stored
    from chargers.models import AutoConfigurationKey, ConfigurationKey

    chargers = _chargers(3)
    AutoConfigurationKey.objects.all().delete()
    AutoConfigurationKey.objects.create(key="MeterValueSampleInterval", value="10", enabled=True)
    AutoConfigurationKey.objects.create(key="ClockAlignedDataInterval", value="900", enabled=False)
    ConfigurationKey.objects.create(charger=chargers[0], key="MeterValueSampleInterval", value="10")
    ConfigurationKey.objects.create(charger=chargers[0], key="HeartbeatInterval", value="300")
    ConfigurationKey.objects.create(charger=chargers[1], key="MeterValueSampleInterval", value="60")
    with CaptureQueriesContext(connection) as queries:
        read = _wanted_and_stored([c.pk for c in chargers])
    assert len(queries) == 2
    wanted = {"MeterValueSampleInterval": "10"}
    assert read == {chargers[0].pk: (wanted, {"MeterValueSampleInterval": "10"}),
                    chargers[1].pk: (wanted, {"MeterValueSampleInterval": "60"}), chargers[2].pk: (wanted, {})}


# --- connections and BootNotifications recorded together ---------------------------------------


@pytest.mark.django_db
def test_boots_recorded_together_answer_as_one_by_one_in_one_transaction():
    from chargers import services as charger_services
    from chargers.models import RegistrationStatus

    accepted = Charger.objects.create(charge_point_id="CP-A", registration_status=RegistrationStatus.ACCEPTED,
                                      heartbeat_interval_s=300)
    pending = Charger.objects.create(charge_point_id="CP-P", registration_status=RegistrationStatus.PENDING)
    changed = Charger.objects.create(charge_point_id="CP-C", registration_status=RegistrationStatus.ACCEPTED,
                                     heartbeat_interval_s=60)
    info = charger_services.BootInfo(vendor="ACME", model="Wallbox", firmware_version="1.2")
    records = [
        charger_services.BootRecord(changed.pk, info, NOW),
        charger_services.BootRecord(accepted.pk, info, NOW),
        charger_services.BootRecord(pending.pk, info, NOW),
    ]
    answers = charger_services.charger_boot_many(records)
    assert [(answers[r].status, answers[r].interval_s) for r in records] == [
        ("Accepted", 60), ("Accepted", 300), ("Pending", charger_services.settings.OCPP_PENDING_RETRY_INTERVAL)]
    assert set(Charger.objects.values_list("firmware_version", "last_boot_at")) == {("1.2", NOW)}


@pytest.mark.django_db
def test_connections_recorded_together_report_the_connection_each_replaced():
    from chargers import services as charger_services

    fresh = Charger.objects.create(charge_point_id="CP-F")
    held = Charger.objects.create(charge_point_id="CP-H", connected=True, channel_name="old-channel")
    raced = Charger.objects.create(charge_point_id="CP-R", connected=True, channel_name="other-channel")
    records = [
        charger_services.ConnectionRecord(fresh.pk, "ch-1", NOW),
        charger_services.ConnectionRecord(held.pk, "ch-2", NOW),
        charger_services.ConnectionRecord(raced.pk, "ch-3", NOW),
    ]
    grants = charger_services.chargers_connected_many(records)
    assert [grants[r].replaced_channel for r in records] == ["", "old-channel", "other-channel"]
    assert sorted(Charger.objects.values_list("channel_name", "connected")) == [
        ("ch-1", True), ("ch-2", True), ("ch-3", True)]


@pytest.mark.django_db(transaction=True)
def test_a_storm_of_boots_goes_in_few_batches():
    from chargers import protocol
    from chargers import services as charger_services

    chargers = [Charger.objects.create(charge_point_id=f"CP-{n}", registration_status="accepted")
                for n in range(40)]
    info = charger_services.BootInfo(vendor="ACME", model="Wallbox")

    async def storm() -> list[str]:
        batcher = protocol.boots_recorded()
        answers = await asyncio.gather(*(batcher.submit(charger_services.BootRecord(c.pk, info, NOW))
                                         for c in chargers))
        assert 1 <= batcher.batches < len(chargers)
        return [answer.status for answer in answers]

    assert asyncio.run(storm()) == ["Accepted"] * 40
    assert Charger.objects.filter(last_boot_at=NOW).count() == 40


def _charger_start(charger: Charger, meter_wh: int, at: dt.datetime) -> Any:
    """A StartTransaction on connector 1 with badge T at `at` (received then), as the handler submits it."""
    from chargers import protocol

    return protocol.ChargerStart(charger.pk, functools.partial(
        tx_services.StartRequest, connector_id=1, id_tag="T", meter_start_wh=meter_wh, timestamp=at,
        reservation_id=None, now=at))


@pytest.mark.django_db(transaction=True)
def test_starts_recorded_together_answer_as_one_by_one_in_one_batch():
    """A fleet starting sessions at once: one transaction, in order (a replay gets the id already
    issued, a later start on the same connector closes the earlier one), each its own answer."""
    from chargers import protocol

    chargers = _chargers(5, prefix="CP-S")
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def start(charger: Charger, minutes: int, meter_wh: int = 0) -> protocol.ChargerStart:
        return _charger_start(charger, meter_wh, at + dt.timedelta(minutes=minutes))

    first, again, later = start(chargers[0], 0), start(chargers[0], 0), start(chargers[0], 1, 500)
    others = [start(charger, 0) for charger in chargers[1:]]

    async def together() -> dict[protocol.ChargerStart, tx_services.StartAnswer | None]:
        batcher = protocol.starts_recorded()
        requests = [first, again, *others, later]
        answers = await asyncio.gather(*(batcher.submit(request) for request in requests))
        assert batcher.batches == 1
        return dict(zip(requests, answers, strict=True))

    answers = asyncio.run(together())
    ids = {request: answer.transaction_id for request, answer in answers.items() if answer is not None}
    assert ids[again] == ids[first] and ids[later] != ids[first]
    assert len({ids[request] for request in others}) == len(others)
    assert Transaction.objects.get(pk=ids[first]).state != TransactionState.ACTIVE  # superseded by `later`
    assert Transaction.objects.filter(state=TransactionState.ACTIVE).count() == 1 + len(others)


@pytest.mark.django_db
def test_starts_read_their_chargers_rows_in_the_same_step_and_one_not_accepted_or_gone_gets_none():
    """A StartTransaction's charger row is read with the batch's starts (one query for all), not
    in a hop of its own before it; a charger rejected while connected, or deleted, starts nothing."""
    from chargers import protocol

    accepted, rejected, gone = _chargers(3, prefix="CP-A")
    Charger.objects.filter(pk=rejected.pk).update(registration_status="rejected")
    Charger.objects.filter(pk=gone.pk).delete()
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    starts = [_charger_start(charger, 0, at) for charger in (accepted, rejected, gone)]
    with CaptureQueriesContext(connection) as queries:
        answers = protocol.starts_with_their_chargers(starts)
    charger_reads = [query["sql"] for query in queries if 'FROM "chargers_charger"' in query["sql"]]
    assert len(charger_reads) == 1
    assert answers[starts[1]] is None and answers[starts[2]] is None
    started = answers[starts[0]]
    assert started is not None
    assert Transaction.objects.get(pk=started.transaction_id).charger_id == accepted.pk
    assert Transaction.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_session_changes_arriving_together_are_told_in_one_step_and_a_failing_listener_stays_alone(
        monkeypatch: pytest.MonkeyPatch):
    from chargers import hooks, protocol

    told: list[Sequence[int]] = []

    def failing(charger_pks: Sequence[int]) -> None:
        raise RuntimeError("listener down")

    monkeypatch.setattr(hooks, "SESSION_CHANGE_LISTENERS", [failing, told.append])
    monkeypatch.setattr(protocol, "SESSION_CHANGE_LISTENERS", hooks.SESSION_CHANGE_LISTENERS)

    async def burst() -> int:
        batcher = protocol.session_changes_told()
        await asyncio.gather(*(batcher.submit(pk) for pk in [1, 2, 3, 2]))
        return batcher.batches

    assert asyncio.run(burst()) == 1
    assert told == [[1, 2, 3]]  # once per batch, each charger once, the failing listener notwithstanding


@pytest.mark.django_db
def test_handshakes_identified_together_answer_as_one_by_one(settings):
    from chargers import services as charger_services

    settings.OCPP_UNKNOWN_CHARGERS = "accept"
    known = Charger.objects.create(charge_point_id="CP-Known")
    request = charger_services.IdentifyRequest
    exact, other_case, new, new_again, refused = (
        request("CP-Known"), request("cp-known"), request("CP-NEW"), request("CP-NEW"),
        request("CP-SCRIPTED", may_register=False))
    found = charger_services.chargers_identify_many([exact, other_case, new, new_again, refused])
    assert found[exact] == charger_services.ChargerIdentity(known.pk, "CP-Known", "", registration_status="pending")
    assert found[other_case] == found[exact]
    registered = found[new]
    assert isinstance(registered, charger_services.ChargerIdentity) and registered.registered
    assert found[new_again] == dataclasses.replace(registered, registered=False)  # found, not registered twice
    assert isinstance(found[refused], charger_services.ConnectionRefused)
    assert Charger.objects.filter(charge_point_id__iexact="CP-NEW").count() == 1
    assert not Charger.objects.filter(charge_point_id="CP-SCRIPTED").exists()
    # A reconnect storm (every id as stored): one SELECT for the batch, however large.
    storm = [request(cp_id) for cp_id in ["CP-Known", "CP-NEW"] * 50]
    with CaptureQueriesContext(connection) as queries:
        again = charger_services.chargers_identify_many(storm)
    assert len(queries) == 1 and {again[r].charger_pk for r in storm} == {known.pk, registered.charger_pk}  # type: ignore[union-attr]
    # A new fleet: its ids looked up once as spelled and once in any case (indexed), then one INSERT
    # and one SELECT of the new rows' keys.
    fleet = [request(f"CP-FLEET-{n:02d}") for n in range(30)]
    with CaptureQueriesContext(connection) as queries:
        joined = charger_services.chargers_identify_many(fleet)
    assert all(joined[r].registered for r in fleet)  # type: ignore[union-attr]
    assert len(queries) <= 6  # the two SELECTs, the INSERT, the keys' SELECT and the transaction's savepoint
    stored = dict(Charger.objects.filter(charge_point_id__startswith="CP-FLEET-").values_list("charge_point_id", "pk"))
    assert {r.charge_point_id: joined[r].charger_pk for r in fleet} == stored  # type: ignore[union-attr]
    assert set(Charger.objects.filter(pk__in=stored.values()).values_list(
        "registration_status", "heartbeat_interval_s")) == {("accepted", settings.OCPP_HEARTBEAT_INTERVAL)}


@pytest.mark.django_db
@pytest.mark.parametrize("policy", ["pending", "reject"])
def test_a_new_fleet_is_registered_or_refused_by_the_unknown_chargers_policy(settings, policy):
    from chargers import services as charger_services

    settings.OCPP_UNKNOWN_CHARGERS = policy
    fleet = [charger_services.IdentifyRequest(f"CP-P{n}") for n in range(5)]
    found = charger_services.chargers_identify_many(fleet)
    if policy == "pending":
        assert all(isinstance(found[r], charger_services.ChargerIdentity) for r in fleet)
        assert set(Charger.objects.values_list("registration_status", flat=True)) == {"pending"}
    else:
        assert {found[r].http_status for r in fleet} == {404}  # type: ignore[union-attr]
        assert not Charger.objects.exists()


@pytest.mark.django_db
def test_a_batch_of_starts_reads_badges_and_prior_sessions_once_and_answers_as_one_by_one(settings):
    from badges.models import Badge
    from loadmgmt.models import Zone

    settings.BADGES_ALLOW_CONCURRENT_TX = True  # the concurrency check stays a query per start
    root = Zone.objects.create(name="Root", max_current_a=100)
    garage = Zone.objects.create(name="Garage", parent=root, max_current_a=63)
    elsewhere = Zone.objects.create(name="Elsewhere", parent=root, max_current_a=63)
    chargers = _chargers(8, prefix="CP-R")
    Charger.objects.filter(pk__in=[c.pk for c in chargers[:4]]).update(zone=garage)
    Charger.objects.filter(pk__in=[c.pk for c in chargers[4:]]).update(zone=elsewhere)
    chargers = list(Charger.objects.filter(pk__in=[c.pk for c in chargers]).order_by("pk"))
    Badge.objects.create(id_tag="FLEET", holder="Fleet card")
    Badge.objects.create(id_tag="GARAGE", holder="Garage only").zones.add(garage)
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stored = tx_services.transaction_start(charger=chargers[0], connector_id=1, id_tag="FLEET", meter_start_wh=10,
                                           timestamp=at - dt.timedelta(minutes=1), reservation_id=None, now=at)
    open_before = tx_services.transaction_start(charger=chargers[1], connector_id=1, id_tag="FLEET",
                                                meter_start_wh=0, timestamp=at - dt.timedelta(minutes=2),
                                                reservation_id=None, now=at)

    def start(charger: Charger, tag: str, minutes: int = 0, meter_wh: int = 0) -> tx_services.StartRequest:
        return tx_services.StartRequest(charger, 1, tag, meter_wh, at + dt.timedelta(minutes=minutes), None, at)

    replay = tx_services.StartRequest(chargers[0], 1, "FLEET", 10, at - dt.timedelta(minutes=1), None, at)
    requests = [replay, start(chargers[1], "fleet"), start(chargers[2], "GARAGE"), start(chargers[3], "NOBODY"),
                start(chargers[4], "GARAGE"), *(start(charger, "FLEET") for charger in chargers[5:])]
    with CaptureQueriesContext(connection) as queries:
        answers = tx_services.transactions_start_many(requests)
    # One INSERT for the new starts (on SQLite, and their ids read back by rowid), closing the
    # superseded session (7), the batch's reads: the prior sessions, each badge and its rights
    # once, the zone tree (9), its savepoint (2).
    assert len(queries) <= 1 + (connection.vendor == "sqlite") + 7 + 9 + 2
    inserts = [query["sql"] for query in queries if 'INSERT INTO "transactions_transaction"' in query["sql"]]
    assert len(inserts) == 1 and re.match(r'(\d+ times: )?INSERT INTO "transactions_transaction"', inserts[0])
    statuses = [answers[request].id_tag_info.status for request in requests]
    assert statuses == ["Accepted", "Accepted", "Accepted", "Invalid", "Invalid", "Accepted", "Accepted", "Accepted"]
    assert answers[replay].transaction_id == stored.transaction_id  # a replay: the id already issued
    assert Transaction.objects.get(pk=open_before.transaction_id).state != TransactionState.ACTIVE  # superseded
    assert Transaction.objects.filter(state=TransactionState.ACTIVE).count() == len(requests)


@pytest.mark.django_db(transaction=True)
def test_a_new_charger_another_process_registers_meanwhile_is_found_not_refused(settings, monkeypatch):
    """Two web processes registering the same new id: the batch whose INSERT loses on the unique id
    fails, its requests are run alone, and the lost one finds the other process's row."""
    import threading

    from django.db import connections

    from chargers import services as charger_services
    from chargers.batcher import Batcher

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: nobody can register in between")
    settings.OCPP_UNKNOWN_CHARGERS = "accept"
    refusal_of = charger_services._registration_refusal
    theirs: list[int] = []

    def other_process_registers_first(charge_point_id: str, may_register: bool):  # between SELECT and INSERT
        if charge_point_id == "CP-RACE" and not theirs:
            def register() -> None:
                theirs.append(Charger.objects.create(charge_point_id="CP-RACE", registration_status="accepted").pk)
                connections.close_all()
            thread = threading.Thread(target=register)
            thread.start()
            thread.join(10)
        return refusal_of(charge_point_id, may_register)

    monkeypatch.setattr(charger_services, "_registration_refusal", other_process_registers_first)
    raced, other = charger_services.IdentifyRequest("CP-RACE"), charger_services.IdentifyRequest("CP-OTHER")

    async def handshakes() -> list[Any]:
        batcher = Batcher(charger_services.chargers_identify_many, name="identify")
        return list(await asyncio.gather(batcher.submit(raced), batcher.submit(other)))

    found_raced, found_other = asyncio.run(handshakes())
    assert theirs and found_raced.charger_pk == theirs[0] and not found_raced.registered
    assert found_other.registered
    assert Charger.objects.filter(charge_point_id__in=["CP-RACE", "CP-OTHER"]).count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_rows_of_chargers_starting_together_are_read_in_one_query_and_a_deleted_one_fails_alone():
    """StartTransaction and Authorize need their charger's whole row: the frames arriving together
    read theirs in one query (one hop), and a charger deleted meanwhile fails alone."""
    from chargers import consumers
    from chargers import services as charger_services

    chargers = _chargers(6, prefix="CP-R")
    with CaptureQueriesContext(connection) as queries:
        rows = charger_services.chargers_rows_many([c.pk for c in chargers])
    assert len(queries) == 1
    assert {pk: row.charge_point_id for pk, row in rows.items()} == {c.pk: c.charge_point_id for c in chargers}
    gone = chargers[2].pk
    Charger.objects.filter(pk=gone).delete()

    async def together() -> tuple[list[Any], int]:
        batcher = consumers.charger_rows()
        found = await asyncio.gather(*(batcher.submit(c.pk) for c in chargers), return_exceptions=True)
        return found, batcher.batches

    found, batches = asyncio.run(together())
    assert isinstance(found[2], Charger.DoesNotExist)
    assert [row.pk for n, row in enumerate(found) if n != 2] == [c.pk for n, c in enumerate(chargers) if n != 2]
    assert batches == 0  # the batch failed (the gone charger), so each ran alone


@pytest.mark.django_db
def test_a_badge_starting_twice_in_one_batch_is_refused_the_second_time(settings):
    """The batch's session rows are inserted together, but a badge's concurrency check still sees
    the session the same badge started earlier in the batch (ConcurrentTx), and every answer's
    transaction id is its own stored row."""
    from badges.models import Badge

    settings.BADGES_ALLOW_CONCURRENT_TX = False
    chargers = _chargers(4, prefix="CP-C")
    Badge.objects.create(id_tag="ONCE", holder="One car")
    Badge.objects.create(id_tag="OTHER", holder="Another car")
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    requests = [tx_services.StartRequest(charger, 1, tag, 0, at, None, at)
                for charger, tag in zip(chargers, ["OTHER", "ONCE", "ONCE", "other"], strict=True)]
    answers = tx_services.transactions_start_many(requests)
    assert [answers[request].id_tag_info.status for request in requests] == [
        "Accepted", "Accepted", "ConcurrentTx", "ConcurrentTx"]
    rows = {row.pk: row for row in Transaction.objects.all()}
    assert sorted(rows) == sorted(answers[request].transaction_id for request in requests)
    for request in requests:
        row = rows[answers[request].transaction_id]
        assert (row.charger_id, row.id_tag, row.id_tag_status) == (
            request.charger.pk, request.id_tag, answers[request].id_tag_info.status)


@pytest.mark.django_db
def test_two_new_sessions_on_one_connector_in_one_insert_are_refused_and_nothing_is_stored():
    charger = _chargers(1, prefix="CP-DUP")[0]
    reads = tx_services._BatchReads([])
    for tag in ("A", "B"):
        reads.insert_later(tx_services._NewSession({"charger_id": charger.pk, "connector_id": 1, "id_tag": tag}))
    with pytest.raises(RuntimeError, match="one connector"):
        reads.flush()
    assert not Transaction.objects.exists()


@pytest.mark.django_db
def test_a_start_whose_session_row_did_not_come_back_is_not_answered_with_a_made_up_id(monkeypatch):
    charger = _chargers(1, prefix="CP-LOST")[0]
    monkeypatch.setattr(tx_services, "insert_new_returning", lambda *args, **kwargs: [])
    at = dt.datetime.now(dt.UTC)
    with pytest.raises(RuntimeError, match="not inserted"):
        tx_services.transactions_start_many([tx_services.StartRequest(charger, 1, "TAG", 0, at, None, at)])
