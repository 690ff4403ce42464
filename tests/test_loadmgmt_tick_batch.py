"""A tick at scale, without websockets: what it sends after a limit cut, how it records its sends,
and that its number of queries does not grow with the number of sessions.

The hand-over to the channel layer is replaced by a recorder (a tick never waits for chargers)
and answers are recorded through the service the consumers call.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from chargers.models import Charger
from loadmgmt import apply, services
from loadmgmt.control import run_tick
from loadmgmt.models import AnswerStatus, LimitState, Zone
from transactions.models import MeterSample, Transaction

NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every cast a tick hands over, in order; all handed over."""
    casts: list[Any] = []

    def hand_over(batch: list[Any]) -> list[str | None]:
        casts.extend(batch)
        return [None] * len(batch)

    monkeypatch.setattr(apply, "cast_calls", hand_over)
    return casts


def build_site(chargers: int) -> Zone:
    """A root zone of 32 A per charger over one board; every charger three-phase with a session."""
    root = Zone.objects.create(name="Connection point", max_current_a=chargers * 32.0)
    board = Zone.objects.create(name="Board", parent=root, max_current_a=chargers * 32.0)
    Charger.objects.bulk_create([
        Charger(charge_point_id=f"CP-{n:04d}", registration_status="accepted", connected=True,
                channel_name=f"daphne!cp{n}", zone=board, rated_max_current_a=32, phases=3)
        for n in range(chargers)])
    for charger in Charger.objects.all():
        tx = Transaction.objects.create(charger=charger, connector_id=1, id_tag=f"T{charger.pk}", meter_start_wh=0,
                                        start_time=NOW - dt.timedelta(minutes=30))
        MeterSample.objects.bulk_create([
            MeterSample(charger=charger, connector_id=1, transaction=tx, timestamp=NOW - dt.timedelta(seconds=5),
                        measurand="Current.Import", phase=phase, value=30.0, raw_value="30.0")
            for phase in ("L1", "L2", "L3")])
    return root


def answer_all(casts: list[Any], outcome: str = AnswerStatus.ACCEPTED) -> None:
    for cast in casts:
        services.limit_answer_record(ticket=services.SendTicket.from_context(cast.context), outcome=outcome, now=NOW)
    casts.clear()


def converge(casts: list[Any]) -> None:
    for _ in range(8):
        report = run_tick(NOW)
        answer_all(casts)
        if report.sent == 0:
            return
    raise AssertionError("the loop did not converge")


def limits_of(casts: list[Any]) -> dict[tuple[int, str], float]:
    """(state pk, purpose) -> limit sent."""
    return {(cast.context["state_pk"], cast.payload["csChargingProfiles"]["chargingProfilePurpose"]):
            cast.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]
            for cast in casts}


@pytest.mark.django_db
def test_a_limit_cut_sends_every_decrease_in_its_first_tick(handed):
    root = build_site(20)
    converge(handed)
    before = {row.pk: row.in_force_a for row in LimitState.objects.all()}
    assert all(value is not None for value in before.values())

    Zone.objects.filter(pk=root.pk).update(max_current_a=20 * 32.0 * 0.25)  # 160 A for 20 sessions
    report = run_tick(NOW)

    sent = limits_of(handed)
    sessions = {pk for pk, purpose in sent if purpose == "TxProfile"}
    defaults = {pk for pk, purpose in sent if purpose == "TxDefaultProfile"}
    assert len(sessions) == 20 and len(defaults) == 20 and report.sent == 40  # all in this one tick
    assert all(limit <= 8.0 for limit in sent.values())  # 160 A / 20: nobody above its new share
    assert all(limit < before[pk] for (pk, _purpose), limit in sent.items())  # decreases only
    # Session profiles are handed over before the safe defaults.
    purposes = [cast.payload["csChargingProfiles"]["chargingProfilePurpose"] for cast in handed]
    assert purposes == ["TxProfile"] * 20 + ["TxDefaultProfile"] * 20
    # Until the answers, the old (higher) limits stay counted; every row has its send pending.
    assert LimitState.objects.filter(pending_a__isnull=False).count() == 40
    assert all(row.held_a == before[row.pk] for row in LimitState.objects.all())

    answer_all(handed)
    in_force = [row.in_force_a for row in LimitState.objects.filter(connector_id=1)]
    assert sum(value or 0.0 for value in in_force) <= 160.0
    assert run_tick(NOW).sent == 0  # nothing left for a second tick


@pytest.mark.django_db
def test_batched_default_sends_number_each_send_and_create_missing_rows():
    zone = Zone.objects.create(name="Root", max_current_a=100)
    known, new = (Charger.objects.create(charge_point_id=cp, registration_status="accepted", zone=zone)
                  for cp in ("CP-KNOWN", "CP-NEW"))
    row = LimitState.objects.create(charger=known, connector_id=0, purpose="TxDefaultProfile", sent_seq=3,
                                    pending_max_a=16.0, in_force_a=10.0)
    # A booting charger's own default send (its consumer) is numbered too.
    boot = services.limit_send_record(state_pk=row.pk, limit_a=6.0, paused=False, rate_unit="A",
                                      transaction_id=None, now=NOW, timeout_s=30)
    tickets = services.limit_default_sends_record(
        [services.DefaultSend(known.pk, 8.0, "A"), services.DefaultSend(new.pk, 12.5, "W")], now=NOW, timeout_s=30)

    assert boot.seq == 4
    assert [(t.state_pk, t.seq, t.limit_a, t.paused, t.transaction_id) for t in tickets] == [
        (row.pk, 5, 8.0, False, None), (LimitState.objects.get(charger=new, connector_id=0).pk, 1, 12.5, False, None)]
    row.refresh_from_db()
    assert (row.sent_seq, row.pending_a, row.pending_max_a, row.rate_unit) == (5, 8.0, 16.0, "A")
    assert row.pending_deadline == NOW + dt.timedelta(seconds=30)
    created = LimitState.objects.get(charger=new, connector_id=0)
    assert (created.purpose, created.transaction_id, created.pending_a, created.pending_max_a, created.rate_unit) == (
        "TxDefaultProfile", None, 12.5, 12.5, "W")

    # The boot's answer is not the latest: it settles nothing in flight; the batch's answer does.
    services.limit_answer_record(ticket=boot, outcome=AnswerStatus.ACCEPTED, now=NOW)
    row.refresh_from_db()
    assert (row.in_force_a, row.pending_a) == (6.0, 8.0)
    services.limit_answer_record(ticket=tickets[0], outcome=AnswerStatus.ACCEPTED, now=NOW)
    row.refresh_from_db()
    assert (row.in_force_a, row.pending_a, row.pending_max_a) == (8.0, None, None)


@pytest.mark.django_db
def test_sends_are_numbered_by_their_update_returning_the_new_sequence_numbers():
    """One UPDATE ... RETURNING per distinct (limit, paused, unit): the sequence numbers come back
    with it, not from a SELECT of their own after the UPDATEs (one statement less per batch of
    booting chargers and per tick)."""
    zone = Zone.objects.create(name="Root", max_current_a=100)
    rows = [LimitState.objects.create(
        charger=Charger.objects.create(charge_point_id=f"CP-R{n}", registration_status="accepted", zone=zone),
        connector_id=0, purpose="TxDefaultProfile", sent_seq=seq) for n, seq in enumerate((0, 7, 41))]
    items = [(rows[0].pk, 8.0, False, "A", None), (rows[1].pk, 8.0, False, "A", None),
             (rows[2].pk, 0.0, True, "W", 12)]

    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        tickets = services._record_pending(items, now=NOW, timeout_s=30, locked=True)

    assert [(t.state_pk, t.seq, t.limit_a, t.paused, t.transaction_id) for t in tickets] == [
        (rows[0].pk, 1, 8.0, False, None), (rows[1].pk, 8, 8.0, False, None), (rows[2].pk, 42, 0.0, True, 12)]
    statements = [query["sql"] for query in queries.captured_queries]
    assert len(statements) == 2 and all(sql.startswith("UPDATE") and "RETURNING" in sql for sql in statements)
    stored = LimitState.objects.order_by("pk").values_list("sent_seq", "pending_a", "pending_paused", "rate_unit")
    assert list(stored) == [(1, 8.0, False, "A"), (8, 8.0, False, "A"), (42, 0.0, True, "W")]


@pytest.mark.django_db
def test_without_returning_the_sends_are_numbered_by_a_select_after_the_update(monkeypatch):
    """A SQLite older than 3.35 (no RETURNING): the same numbers, by the UPDATE and a SELECT."""
    zone = Zone.objects.create(name="Root", max_current_a=100)
    rows = [LimitState.objects.create(
        charger=Charger.objects.create(charge_point_id=f"CP-S{n}", registration_status="accepted", zone=zone),
        connector_id=0, purpose="TxDefaultProfile", sent_seq=seq) for n, seq in enumerate((3, 0))]
    monkeypatch.setattr(connection.features, "can_return_columns_from_insert", False)

    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        tickets = services._record_pending([(rows[0].pk, 6.0, False, "A", None), (rows[1].pk, 9.0, False, "A", 5)],
                                           now=NOW, timeout_s=30, locked=True)

    assert [(t.state_pk, t.seq, t.limit_a) for t in tickets] == [(rows[0].pk, 4, 6.0), (rows[1].pk, 1, 9.0)]
    assert not any("RETURNING" in query["sql"] for query in queries.captured_queries)


@pytest.mark.django_db
def test_batched_session_sends_keep_the_highest_unsettled_limit_counted():
    zone = Zone.objects.create(name="Root", max_current_a=100)
    charger = Charger.objects.create(charge_point_id="CP-1", registration_status="accepted", zone=zone)
    other = Charger.objects.create(charge_point_id="CP-2", registration_status="accepted", zone=zone)
    ended = LimitState.objects.create(charger=other, connector_id=1, purpose="TxProfile", transaction_id=77,
                                      sent_seq=9, pending_max_a=32.0, in_force_a=32.0)
    first = services.limit_sends_record([services.SessionSend(charger.pk, 1, 5, 16.0, "A")], now=NOW, timeout_s=30)
    second = services.limit_sends_record([services.SessionSend(charger.pk, 1, 5, 10.0, "A"),
                                          services.SessionSend(other.pk, 1, 78, 0.0, "A")], now=NOW, timeout_s=30)
    assert [t.seq for t in first + second] == [1, 2, 10]  # a reset row keeps counting its sends
    row = LimitState.objects.get(charger=charger, connector_id=1)
    assert (row.pending_a, row.pending_max_a) == (10.0, 16.0)  # 16 A unanswered: still counted
    ended.refresh_from_db()  # the row of an ended transaction starts afresh for the new one
    assert (ended.transaction_id, ended.in_force_a, ended.pending_a, ended.pending_max_a, ended.pending_paused) == (
        78, None, 0.0, 0.0, True)


def _cut_tick_queries(chargers: int, handed: list[Any]) -> int:
    root = build_site(chargers)
    converge(handed)
    Zone.objects.filter(pk=root.pk).update(max_current_a=chargers * 32.0 * 0.3)
    with CaptureQueriesContext(connection) as queries:
        report = run_tick(NOW)
    assert report.sent == 2 * chargers
    answer_all(handed)
    with CaptureQueriesContext(connection) as quiet:
        assert run_tick(NOW).sent == 0
    return len(queries) + 1000 * len(quiet)


@pytest.mark.django_db
def test_the_queries_of_a_tick_do_not_grow_with_its_sessions(handed):
    small = _cut_tick_queries(5, handed)
    Transaction.objects.all().delete()
    Charger.objects.all().delete()
    Zone.objects.filter(parent__isnull=False).delete()
    Zone.objects.all().delete()
    large = _cut_tick_queries(60, handed)
    assert large == small
    assert small % 1000 < 60  # a cut tick: a few dozen queries, whatever the number of sessions


@pytest.mark.django_db(transaction=True)
def test_rebalance_requests_coalesce_into_one_queued_run_and_none_is_lost(monkeypatch):
    from loadmgmt import tasks

    client = tasks._redis()
    client.delete(tasks.QUEUED_KEY, tasks.REQUEST_KEY)
    queued: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.control_tick, "apply_async", lambda **kwargs: queued.append(kwargs))

    for _ in range(200):  # a cut: hundreds of lower limits confirmed within a second
        tasks.rebalance_soon()
    assert len(queued) == 1 and client.get(tasks.REQUEST_KEY)

    assert tasks.control_tick(force=True) is not None  # the queued run: served, flag cleared
    assert not client.get(tasks.REQUEST_KEY) and not client.get(tasks.QUEUED_KEY)
    tasks.rebalance_soon()  # a request after the run started queues the next one
    assert len(queued) == 2

    def broker_down(**kwargs: Any) -> None:
        raise ConnectionError("broker down")

    client.delete(tasks.QUEUED_KEY)
    monkeypatch.setattr(tasks.control_tick, "apply_async", broker_down)
    with pytest.raises(ConnectionError):
        tasks.rebalance_soon()
    assert not client.get(tasks.QUEUED_KEY)  # not marked as queued: the next request tries again
    assert client.get(tasks.REQUEST_KEY)  # and a periodic tick serves this one
    client.delete(tasks.REQUEST_KEY)


def _rows_for_answers() -> list[tuple[LimitState, services.SendTicket, str]]:
    """Rows in various states and an answer for each (some rows answered twice, in order)."""
    zone = Zone.objects.create(name="Root", max_current_a=100)
    cases = []
    for n, (outcome, limit, in_force, pending_max, seq_sent, seq_answered, tx_row, tx_answer) in enumerate([
        (AnswerStatus.ACCEPTED, 8.0, 16.0, 16.0, 1, 1, 5, 5),  # a decrease accepted: lowered
        (AnswerStatus.ACCEPTED, 20.0, 16.0, 20.0, 1, 1, 6, 6),  # a raise accepted
        (AnswerStatus.REJECTED, 8.0, 16.0, 16.0, 1, 1, 7, 7),  # refused: 16 A stays in force
        (AnswerStatus.NO_ANSWER, 24.0, 16.0, 24.0, 1, 1, 8, 8),  # unknown: 24 A stays counted
        (AnswerStatus.ACCEPTED, 10.0, 16.0, 16.0, 2, 1, 9, 9),  # an older send's answer: 2nd still in flight
        (AnswerStatus.ACCEPTED, 6.0, 16.0, 16.0, 1, 1, 10, 11),  # the transaction ended: ignored
    ]):
        charger = Charger.objects.create(charge_point_id=f"CP-A{n}", registration_status="accepted", zone=zone)
        row = LimitState.objects.create(charger=charger, connector_id=1, purpose="TxProfile", transaction_id=tx_row,
                                        in_force_a=in_force, pending_a=limit, pending_max_a=pending_max,
                                        sent_seq=seq_sent, failures=1)
        cases.append((row, services.SendTicket(row.pk, seq_answered, limit, False, tx_answer), outcome))
    row = cases[0][0]  # the same row answered again, a later send: applied after the first
    cases.append((row, services.SendTicket(row.pk, 1, 6.0, False, 5), AnswerStatus.CALL_ERROR))
    return cases


FIELDS = ("in_force_a", "pending_a", "pending_max_a", "unsettled_a", "failures", "last_status", "retry_at",
          "raised_at", "in_force_since", "last_answer_at", "last_detail")


@pytest.mark.django_db
def test_answers_recorded_together_end_as_recorded_one_by_one():
    cases = _rows_for_answers()
    pks = [row.pk for row, _ticket, _outcome in cases]
    initial = {row.pk: {f: getattr(row, f) for f in FIELDS} for row, _t, _o in cases}
    lowered_one_by_one = [services.limit_answer_record(ticket=ticket, outcome=outcome, detail="d", now=NOW)
                          for _row, ticket, outcome in cases]
    one_by_one = {row.pk: {f: getattr(row, f) for f in FIELDS} for row in LimitState.objects.filter(pk__in=pks)}
    for pk, values in initial.items():
        LimitState.objects.filter(pk=pk).update(**values)

    with CaptureQueriesContext(connection) as queries:
        lowered = services.limit_answers_record(
            [services.Answer(ticket, outcome, "d") for _row, ticket, outcome in cases], now=NOW)
    together = {row.pk: {f: getattr(row, f) for f in FIELDS} for row in LimitState.objects.filter(pk__in=pks)}
    assert together == one_by_one
    assert lowered is any(lowered_one_by_one) is True
    assert together[pks[0]]["in_force_a"] == 8.0 and together[pks[0]]["last_status"] == AnswerStatus.CALL_ERROR
    assert together[pks[4]]["pending_a"] == 10.0  # the second send is still in flight
    assert together[pks[5]]["in_force_a"] == 16.0  # the other transaction's row untouched
    assert len(queries) <= 2 + len(cases)  # begin/select, at most one UPDATE per distinct set of values


@pytest.mark.django_db(transaction=True)
def test_the_answer_recorder_commits_answers_from_many_threads_and_asks_for_a_rebalance():
    import threading

    from loadmgmt.answers import AnswerRecorder

    zone = Zone.objects.create(name="Root", max_current_a=1000)
    Charger.objects.bulk_create([Charger(charge_point_id=f"CP-T{n}", registration_status="accepted", zone=zone)
                                 for n in range(40)])
    rows = [LimitState.objects.create(charger=charger, connector_id=0, purpose="TxDefaultProfile", in_force_a=16.0,
                                      pending_a=8.0, pending_max_a=8.0, sent_seq=1)
            for charger in Charger.objects.all()]
    asked: list[int] = []
    recorder = AnswerRecorder(on_lowered=lambda: asked.append(1))

    def answer(row: LimitState) -> None:
        recorder.submit(services.Answer(services.SendTicket(row.pk, 1, 8.0, False, None), AnswerStatus.ACCEPTED))

    threads = [threading.Thread(target=answer, args=(row,)) for row in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    from tests.conftest import wait_until

    wait_until(recorder.idle, timeout_s=10)
    recorder.stop()  # its thread's database connection closed: the test database can be dropped
    assert set(LimitState.objects.values_list("in_force_a", "pending_a", "last_status")) == {
        (8.0, None, AnswerStatus.ACCEPTED)}
    assert 1 <= len(asked) <= len(rows)  # one request per batch that lowered a limit


def _answer_rows(count: int) -> list[LimitState]:
    zone = Zone.objects.create(name="Root", max_current_a=1000)
    Charger.objects.bulk_create([Charger(charge_point_id=f"CP-L{n}", registration_status="accepted", zone=zone)
                                 for n in range(count)])
    return [LimitState.objects.create(charger=charger, connector_id=0, purpose="TxDefaultProfile", in_force_a=16.0,
                                      pending_a=8.0, pending_max_a=8.0, sent_seq=1)
            for charger in Charger.objects.all()]


def _accepted(row: LimitState) -> services.Answer:
    return services.Answer(services.SendTicket(row.pk, 1, 8.0, False, None), AnswerStatus.ACCEPTED)


@pytest.mark.django_db(transaction=True)
def test_answers_queued_on_an_event_loop_are_recorded_on_its_database_thread_together(monkeypatch):
    """A web process: no thread (and database connection) of the recorder's own; the answers
    arriving while a hop waits for the database thread are recorded in that hop."""
    import asyncio
    import threading

    from channels.db import database_sync_to_async

    from loadmgmt.answers import AnswerRecorder

    rows = _answer_rows(30)
    asked: list[int] = []
    recorder = AnswerRecorder(on_lowered=lambda: asked.append(1))
    recorded_on: list[tuple[str, int]] = []
    record = services.limit_answers_record

    def watched(batch: list[services.Answer], **kwargs: Any) -> bool:
        recorded_on.append((threading.current_thread().name, len(batch)))
        return record(batch, **kwargs)

    monkeypatch.setattr(services, "limit_answers_record", watched)

    async def answer_all() -> str:
        database_thread = await database_sync_to_async(lambda: threading.current_thread().name)()
        for row in rows[:10]:
            recorder.submit(_accepted(row))
        await asyncio.sleep(0)  # the first hop is on its way: the next twenty queue behind it
        for row in rows[10:]:
            recorder.submit(_accepted(row))
        while not recorder.idle():
            await asyncio.sleep(0.01)
        return database_thread

    database_thread = asyncio.run(answer_all())
    assert {name for name, _size in recorded_on} == {database_thread}
    assert sum(size for _name, size in recorded_on) == 30 and len(recorded_on) <= 2
    assert not any(thread.name == "loop-answers" for thread in threading.enumerate())
    assert set(LimitState.objects.values_list("in_force_a", "pending_a", "last_status")) == {
        (8.0, None, AnswerStatus.ACCEPTED)}
    assert 1 <= len(asked) <= 2


@pytest.mark.django_db(transaction=True)
def test_answers_left_queued_when_the_event_loop_closes_are_recorded_by_a_thread(monkeypatch):
    """Cancelled with the loop (a process stopping), the hop hands what is still queued to a thread."""
    import asyncio
    import threading

    from loadmgmt.answers import AnswerRecorder
    from tests.conftest import wait_until

    rows = _answer_rows(6)
    recorder = AnswerRecorder(on_lowered=lambda: None)
    first_hop = threading.Event()
    release = threading.Event()
    record = services.limit_answers_record

    def slow_first(batch: list[services.Answer], **kwargs: Any) -> bool:
        if not first_hop.is_set():
            first_hop.set()
            release.wait(10)
        return record(batch, **kwargs)

    monkeypatch.setattr(services, "limit_answers_record", slow_first)

    async def answer_then_close() -> None:
        recorder.submit(_accepted(rows[0]))
        while not first_hop.is_set():
            await asyncio.sleep(0.01)
        for row in rows[1:]:  # queued behind the hop that is still writing
            recorder.submit(_accepted(row))
        # asyncio.run cancels the drain as it returns

    asyncio.run(answer_then_close())
    release.set()
    wait_until(recorder.idle, timeout_s=10)
    recorder.stop()
    assert set(LimitState.objects.values_list("last_status", flat=True)) == {AnswerStatus.ACCEPTED}


@pytest.mark.django_db
def test_profiles_that_find_the_process_inbox_full_are_handed_over_again_in_the_same_tick(monkeypatch):
    build_site(12)
    inbox: list[Any] = []
    rounds: list[int] = []

    def full_inbox(batch: list[Any]) -> list[str | None]:
        """The process's inbox takes 5 calls per round (it drains in between), refuses the rest."""
        rounds.append(len(batch))
        inbox.extend(batch[:5])
        return [None] * min(5, len(batch)) + ["ChannelFull: "] * max(0, len(batch) - 5)

    monkeypatch.setattr(apply, "cast_calls", full_inbox)
    monkeypatch.setattr(apply.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(apply, "HANDOVER_RETRY_CHUNK", 4)
    report = run_tick(NOW)
    assert report.sent == 24 and len(inbox) == 24  # 12 first profiles, 12 defaults, all in this tick
    assert rounds == [12, 4, 3, 12, 4, 3]  # the sessions' then the defaults', retried a chunk at a time
    purposes = [cast.payload["csChargingProfiles"]["chargingProfilePurpose"] for cast in inbox]
    assert purposes == ["TxProfile"] * 12 + ["TxDefaultProfile"] * 12  # the order is kept
    assert not LimitState.objects.filter(last_status=AnswerStatus.NOT_SENT).exists()

    # A inbox that stays full: given up after HANDOVER_RETRY_S, recorded as not sent (retried later).
    monkeypatch.setattr(apply, "cast_calls", lambda batch: ["ChannelFull: "] * len(batch))
    monkeypatch.setattr(apply, "HANDOVER_RETRY_S", 0.0)
    answer_all(inbox)
    Zone.objects.filter(parent__isnull=True).update(max_current_a=12 * 10.0)
    assert run_tick(NOW).sent > 0
    assert LimitState.objects.filter(last_status=AnswerStatus.NOT_SENT).exists()


@pytest.mark.django_db
def test_the_sessions_profiles_are_on_their_way_before_the_defaults_are_recorded(monkeypatch):
    """A cut's session decreases are handed over first; the defaults, planned and recorded after
    them, are each recorded as pending before their own hand-over."""
    build_site(6)
    seen: list[tuple[list[str], int, int]] = []

    def hand_over(batch: list[Any]) -> list[str | None]:
        purposes = [cast.payload["csChargingProfiles"]["chargingProfilePurpose"] for cast in batch]
        pending = LimitState.objects.filter(pending_a__isnull=False)
        seen.append((purposes, pending.filter(connector_id=1).count(), pending.filter(connector_id=0).count()))
        return [None] * len(batch)

    monkeypatch.setattr(apply, "cast_calls", hand_over)
    report = run_tick(NOW)
    assert report.sent == 12
    assert seen == [(["TxProfile"] * 6, 6, 0), (["TxDefaultProfile"] * 6, 6, 6)]


def test_the_recorder_is_not_idle_while_any_of_two_overlapping_batches_is_being_recorded(monkeypatch):
    """A closing event loop's hop and the recorder's thread can record at once; the first to
    finish must not make the recorder look idle while the other still writes (tests and the
    process's stop wait on `idle`)."""
    import threading

    from loadmgmt import answers
    from loadmgmt.answers import AnswerRecorder

    monkeypatch.setattr(answers, "MAX_BATCH", 1)
    recorder = AnswerRecorder(on_lowered=lambda: None)
    started = {name: threading.Event() for name in ("first", "second")}
    release = {name: threading.Event() for name in ("first", "second")}

    def held_record(batch: list[Any], rebalance: bool) -> None:
        name = threading.current_thread().name
        started[name].set()
        assert release[name].wait(10)

    monkeypatch.setattr(recorder, "_record", held_record)
    for pk in (1, 2):
        recorder._queue.append(services.Answer(services.SendTicket(pk, 1, 8.0, False, None), AnswerStatus.ACCEPTED))
    threads = {name: threading.Thread(target=recorder._take_and_record, name=name) for name in ("first", "second")}
    try:
        for name in ("first", "second"):
            threads[name].start()
            assert started[name].wait(10)
        release["first"].set()
        threads["first"].join(10)
        assert not recorder.idle()
        release["second"].set()
        threads["second"].join(10)
        assert recorder.idle()
    finally:
        for event in release.values():
            event.set()


@pytest.mark.django_db
def test_a_tick_reads_each_sessions_recent_samples_not_its_whole_history(handed):
    """The tick's read of the last minute of currents seeks the (session, timestamp) index: with an
    index on the session alone, SQLite visited every sample since each session started (1,000
    sessions with up to 2 h of samples 30 s apart: 228 ms for the tick's reading instead of 114)."""
    build_site(3)
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, MeterSample._meta.db_table)
    index_columns = [info["columns"] for info in indexes.values() if info["index"]]
    assert ["transaction_id", "timestamp"] in index_columns
    assert ["transaction_id"] not in index_columns  # one index fewer to update per sample
    if connection.vendor != "sqlite":
        return  # PostgreSQL plans by its statistics; the index list above is what it is given
    with CaptureQueriesContext(connection) as queries:
        run_tick(NOW)
    reads = [q["sql"] for q in queries.captured_queries if 'FROM "transactions_metersample"' in q["sql"]]
    assert len(reads) == 1, reads
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + reads[0])
        plan = " | ".join(str(row[-1]) for row in cursor.fetchall())
    assert "(transaction_id=? AND timestamp>?)" in plan, plan
