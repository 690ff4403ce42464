"""Writes of the load-management app: measurements, the loop's live state, decisions.

The live state of a connector (`LimitState`) has two writers that never wait for each other:
the tick (in a Celery worker) records what it *sends* and what it *wants*; the process holding
the charger's websocket records the charger's *answer* when it arrives. Each touches only its
own fields, and an answer is matched to its send by a sequence number, so a late answer can
never undo a newer send.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.sql.subqueries import UpdateQuery

from chargers.bulkinsert import insert_new, insert_rows
from loadmgmt.models import AnswerStatus, LimitPurpose, LimitState, Setpoint, SiteSettings, Zone

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

# A failed send is retried after 1, 2, 4 … seconds, at most this long apart.
MAX_BACKOFF_S = 60.0
# Outcomes that settle what the charger holds: Accepted replaces the old limit; a refusal keeps it.
_SETTLING = {AnswerStatus.ACCEPTED, AnswerStatus.REJECTED, AnswerStatus.NOT_SUPPORTED, AnswerStatus.CALL_ERROR,
             AnswerStatus.NOT_SENT}


def zone_record_measurement(
    *,
    zone: Zone,
    at: dt.datetime,
    current_a: tuple[float | None, float | None, float | None] | None = None,
    power_kw: float | None = None,
    pv_power_kw: float | None = None,
    pv_current_a: tuple[float, float, float] | None = None,
) -> None:
    """Store the latest measurement of a zone's total consumption and/or PV production.

    Consumption and PV keep separate timestamps, so that one source being alive never makes
    the other look fresh; an older reading never overwrites a newer one (pushes and polls may
    cross).
    """
    if current_a is not None or power_kw is not None:
        fields: dict[str, object] = {"measured_at": at}
        if current_a is not None:
            fields.update(measured_current_l1_a=current_a[0], measured_current_l2_a=current_a[1],
                          measured_current_l3_a=current_a[2])
        if power_kw is not None:
            fields["measured_power_kw"] = power_kw
        before = Zone.objects.filter(pk=zone.pk).values(*_LOAD_FIELDS).first()
        if Zone.objects.filter(pk=zone.pk).exclude(measured_at__gt=at).update(**fields) and before is not None:
            _rebalance_on_load_rise(zone.pk, before, fields)
    if pv_power_kw is not None:
        pv = pv_current_a or (None, None, None)
        Zone.objects.filter(pk=zone.pk).exclude(pv_measured_at__gt=at).update(
            pv_power_kw=pv_power_kw, pv_measured_at=at, pv_current_l1_a=pv[0], pv_current_l2_a=pv[1],
            pv_current_l3_a=pv[2],
        )


_LOAD_FIELDS = ("mode", "measured_current_l1_a", "measured_current_l2_a", "measured_current_l3_a", "measured_power_kw")
LOAD_RISE_A = 1.0  # a building load rise this large re-balances at once (a dynamic zone's capacity fell)
LOAD_RISE_KW = 0.5


def _rebalance_on_load_rise(zone_pk: int, before: dict[str, object], after: dict[str, object]) -> None:
    """A dynamic zone's load rose: its capacity fell, so the loop runs now, not at its next period.

    Asked from a thread of its own (loadmgmt.tasks.BackgroundRequest): a BEMS push of the load
    is written on the web process's database thread, which must not wait on Redis or the broker.
    Asked once the measurement commits: a meter's reading is fed to its zone inside the meter's
    transaction, and a tick queued before the commit read the load from before the rise.
    """
    if before["mode"] != "dynamic":
        return
    rises = [_rise(before.get(name), after.get(name)) for name in _LOAD_FIELDS[1:4]]
    risen = any(r >= LOAD_RISE_A for r in rises) or _rise(before["measured_power_kw"],
                                                         after.get("measured_power_kw")) >= LOAD_RISE_KW
    if not risen:
        return
    from loadmgmt.tasks import REBALANCE_REQUESTS  # noqa: PLC0415 - tasks imports services

    logger.debug("the load of zone %s rose: re-balance asked", zone_pk)
    transaction.on_commit(REBALANCE_REQUESTS.ask)


def _rise(before: object, after: object) -> float:
    if not isinstance(after, int | float):
        return 0.0
    return float(after) - (float(before) if isinstance(before, int | float) else 0.0)


@dataclass(frozen=True, slots=True)
class SendTicket:
    """What travels with a profile to the charger and back with its answer."""

    state_pk: int
    seq: int
    limit_a: float
    paused: bool
    transaction_id: int | None

    def as_context(self) -> dict[str, object]:
        return {"state_pk": self.state_pk, "seq": self.seq, "limit_a": self.limit_a, "paused": self.paused,
                "transaction_id": self.transaction_id}

    @classmethod
    def from_context(cls, context: dict[str, object]) -> SendTicket:
        tx = context.get("transaction_id")
        return cls(state_pk=int(context["state_pk"]), seq=int(context["seq"]),  # type: ignore[call-overload]
                   limit_a=float(context["limit_a"]), paused=bool(context["paused"]),  # type: ignore[arg-type]
                   transaction_id=None if tx is None else int(tx))  # type: ignore[call-overload]


def limit_state_for(*, charger_pk: int, connector_id: int, transaction_id: int | None,
                    state_since: float = 0.0) -> LimitState:
    """The connector's row, reset when it still describes another (ended) transaction.

    A charger drops a transaction's TxProfile when the transaction ends, so nothing of the old
    row is held any more; the default (connector 0) row is kept across everything.
    """
    purpose = LimitPurpose.TX_DEFAULT if connector_id == 0 else LimitPurpose.TX
    state, created = LimitState.objects.get_or_create(
        charger_id=charger_pk, connector_id=connector_id,
        defaults={"purpose": purpose, "transaction_id": transaction_id, "state_since": state_since},
    )
    if not created and connector_id != 0 and state.transaction_id != transaction_id:
        LimitState.objects.filter(pk=state.pk).update(
            transaction_id=transaction_id, in_force_a=None, in_force_paused=False, in_force_since=None, raised_at=None,
            pending_a=None, pending_max_a=None, pending_paused=False, pending_sent_at=None, pending_deadline=None,
            wanted_a=None, wanted_paused=False, binding="", waiting="", state_since=state_since, run_seconds=0.0,
            run_counted_at=None, last_status="", last_detail="", last_answer_at=None, failures=0, retry_at=None,
        )
        state.refresh_from_db()
    return state


def limit_send_record(
    *, state_pk: int, limit_a: float, paused: bool, rate_unit: str, transaction_id: int | None, now: dt.datetime,
    timeout_s: float,
) -> SendTicket:
    """Record a profile about to be sent; from now on it counts as held until an answer settles it."""
    with transaction.atomic():
        state = LimitState.objects.select_for_update().get(pk=state_pk)
        pending_max = limit_a if state.pending_max_a is None else max(state.pending_max_a, limit_a)
        LimitState.objects.filter(pk=state_pk).update(
            sent_seq=F("sent_seq") + 1, pending_a=limit_a, pending_max_a=pending_max, pending_paused=paused,
            pending_sent_at=now, pending_deadline=now + dt.timedelta(seconds=timeout_s), rate_unit=rate_unit,
        )
        seq = state.sent_seq + 1
    return SendTicket(state_pk, seq, limit_a, paused, transaction_id)


@dataclass(frozen=True, slots=True)
class SessionSend:
    """A TxProfile about to be sent for a running transaction (see `limit_sends_record`)."""

    charger_pk: int
    connector_id: int
    transaction_id: int
    limit_a: float
    rate_unit: str


@dataclass(frozen=True, slots=True)
class DefaultSend:
    """A charger's TxDefaultProfile (connector 0) about to be sent (see `limit_default_sends_record`)."""

    charger_pk: int
    limit_a: float
    rate_unit: str


# Rows per statement of the batched writes (SQLite binds at most 32,766 parameters).
BATCH_ROWS = 2000


def chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """`items` in slices of BATCH_ROWS: the parameters of one statement."""
    for start in range(0, len(items), BATCH_ROWS):
        yield items[start:start + BATCH_ROWS]


def rows_update(pks: Sequence[int], **values: Any) -> None:
    """Set `values` on the LimitState rows `pks`: one UPDATE per BATCH_ROWS rows."""
    for chunk in chunks(pks):
        LimitState.objects.filter(pk__among=chunk).update(**values)


def limit_sends_record(sends: list[SessionSend], *, now: dt.datetime, timeout_s: float) -> list[SendTicket]:
    """`limit_send_record` for many session connectors at once: a few queries, never one per send.

    The rows are read once (to find connectors without a row, or whose row still describes an
    ended transaction), then `_record_pending` writes every send in one statement per distinct
    limit. Call it inside a transaction.
    """
    if not sends:
        return []
    keys = {(send.charger_pk, send.connector_id) for send in sends}
    rows = _session_rows(keys)
    missing = [send for send in sends if (send.charger_pk, send.connector_id) not in rows]
    if missing:
        insert_new(LimitState, [
            {"charger_id": send.charger_pk, "connector_id": send.connector_id, "purpose": LimitPurpose.TX,
             "transaction_id": send.transaction_id, "state_since": now.timestamp()} for send in missing
        ], ignore_conflicts=True)
        rows.update(_session_rows({(send.charger_pk, send.connector_id) for send in missing}))
    items: list[tuple[int, float, bool, str, int | None]] = []
    for send in sends:
        pk, transaction_id = rows[(send.charger_pk, send.connector_id)]
        if transaction_id != send.transaction_id:  # an ended transaction's row: start afresh (rare)
            pk = limit_state_for(charger_pk=send.charger_pk, connector_id=send.connector_id,
                                 transaction_id=send.transaction_id, state_since=now.timestamp()).pk
        items.append((pk, send.limit_a, send.limit_a == 0, send.rate_unit, send.transaction_id))
    return _record_pending(items, now=now, timeout_s=timeout_s)


def _session_rows(keys: set[tuple[int, int]]) -> dict[tuple[int, int], tuple[int, int | None]]:
    """(charger pk, connector id) -> (row pk, its transaction) for the rows of these connectors."""
    found: dict[tuple[int, int], tuple[int, int | None]] = {}
    chargers = sorted({key[0] for key in keys})
    connectors = {key[1] for key in keys}
    for chunk in chunks(chargers):
        rows = LimitState.objects.filter(charger_id__among=chunk, connector_id__among=connectors)
        for pk, charger_id, connector_id, transaction_id in rows.values_list(
                "pk", "charger_id", "connector_id", "transaction_id"):
            if (charger_id, connector_id) in keys:
                found[(charger_id, connector_id)] = (pk, transaction_id)
    return found


def limit_default_sends_record(sends: list[DefaultSend], *, now: dt.datetime, timeout_s: float) -> list[SendTicket]:
    """`limit_send_record` for many chargers' safe defaults at once, creating missing rows.

    A booting charger's consumer may record its own default send meanwhile (`limit_send_record`):
    the sequence number is incremented by the database (`sent_seq + 1`) and read back inside the
    same transaction, so neither send can lose the other's number. Call it inside a transaction.
    """
    if not sends:
        return []
    pks = [send.charger_pk for send in sends]
    rows = _default_rows(pks)
    missing = [pk for pk in pks if pk not in rows]
    if missing:
        insert_new(LimitState, [
            {"charger_id": pk, "connector_id": 0, "purpose": LimitPurpose.TX_DEFAULT, "transaction_id": None}
            for pk in missing
        ], ignore_conflicts=True)
        rows.update(_default_rows(missing))
    return _record_pending([(rows[send.charger_pk], send.limit_a, False, send.rate_unit, None) for send in sends],
                           now=now, timeout_s=timeout_s)


def limit_boot_defaults_record(
    rate_units: dict[int, str], limit_of: Callable[[LimitState], float], *, now: dt.datetime, timeout_s: float,
) -> dict[int, SendTicket]:
    """The safe defaults of many booting chargers (charger pk -> rate unit), recorded as pending
    in one transaction before they are sent: `limit_send_record` for each, in a few statements.

    Each charger's limit is `limit_of(its connector-0 row)` (loaded with `wanted_a` and `in_force_a`
    only: another field would cost a query per row), read (and, where the database can,
    locked) inside the transaction that records it, as `limit_send_record` reads it; a missing
    row is created first (it knows nothing: `limit_of` makes that 0 A). The sequence numbers are
    incremented by the database and read back (`_record_pending`), so a tick recording the same
    charger's default meanwhile cannot lose either send.
    """
    if not rate_units:
        return {}
    pks = sorted(rate_units)
    with transaction.atomic():
        states = _default_states(pks)
        missing = [pk for pk in pks if pk not in states]
        if missing:
            insert_new(LimitState, [
                {"charger_id": pk, "connector_id": 0, "purpose": LimitPurpose.TX_DEFAULT, "transaction_id": None,
                 "state_since": 0.0} for pk in missing
            ], ignore_conflicts=True)
            states.update(_default_states(missing))
        items: list[tuple[int, float, bool, str, int | None]] = [
            (states[pk].pk, limit_of(states[pk]), False, rate_units[pk], None) for pk in pks]
        tickets = _record_pending(items, now=now, timeout_s=timeout_s, locked=True)  # by _default_states
    return dict(zip(pks, tickets, strict=True))


def _default_states(charger_pks: list[int]) -> dict[int, LimitState]:
    """Charger pk -> its connector-0 row, locked in primary-key order where the database can."""
    found: dict[int, LimitState] = {}
    for chunk in chunks(charger_pks):
        rows = LimitState.objects.filter(charger_id__among=chunk, connector_id=0).order_by("pk").only(
            "pk", "charger_id", "connector_id", "wanted_a", "in_force_a")
        if connection.features.has_select_for_update:
            rows = rows.select_for_update()
        found.update((row.charger_id, row) for row in rows)
    return found


def _default_rows(charger_pks: list[int]) -> dict[int, int]:
    """Charger pk -> pk of its connector-0 (safe default) row."""
    found: dict[int, int] = {}
    for chunk in chunks(charger_pks):
        found.update(LimitState.objects.filter(charger_id__among=chunk, connector_id=0).values_list("charger_id", "pk"))
    return found


def lock_rows(pks: list[int]) -> None:
    """Lock these rows in primary-key order (PostgreSQL; SQLite locks the whole database): every
    writer of many rows (the tick, a batch of answers) takes them in the same order, so two of
    them never wait on each other in a cycle."""
    if connection.features.has_select_for_update:
        for chunk in chunks(sorted(set(pks))):
            locked = LimitState.objects.select_for_update().filter(pk__among=chunk).order_by("pk")
            list(locked.values_list("pk", flat=True))


def _record_pending(
    items: list[tuple[int, float, bool, str, int | None]], *, now: dt.datetime, timeout_s: float,
    locked: bool = False,
) -> list[SendTicket]:
    """Mark rows as sent (state pk, limit, paused, rate unit, transaction): one UPDATE per distinct
    (limit, paused, unit), whatever the number of rows, returning the new sequence numbers.
    `locked`: the caller's transaction already holds these rows' locks, taken in primary-key order.

    Each row's `pending_max_a` becomes max(itself, limit) in the database, so an answer recorded
    concurrently can never make a send count less than it should.

    No savepoint of its own: every caller is in a transaction that an error here rolls back
    whole (a savepoint cost two more round trips per batch of boots and per tick).
    """
    deadline = now + dt.timedelta(seconds=timeout_s)
    groups: dict[tuple[float, bool, str], list[int]] = {}
    for pk, limit_a, paused, unit, _tx in items:
        groups.setdefault((limit_a, paused, unit), []).append(pk)
    seqs: dict[int, int] = {}
    with transaction.atomic(savepoint=False):
        if not locked:
            lock_rows([item[0] for item in items])
        for (limit_a, paused, unit), pks in groups.items():
            for chunk in chunks(pks):
                seqs.update(_update_returning_seqs(
                    chunk, sent_seq=F("sent_seq") + 1, pending_a=limit_a,
                    pending_max_a=Case(When(pending_max_a__gt=limit_a, then=F("pending_max_a")),
                                       default=Value(limit_a)),
                    pending_paused=paused, pending_sent_at=now, pending_deadline=deadline, rate_unit=unit))
    return [SendTicket(pk, seqs[pk], limit_a, paused, tx) for pk, limit_a, paused, _unit, tx in items]


def _update_returning_seqs(pks: Sequence[int], **values: Any) -> dict[int, int]:
    """Set `values` on the LimitState rows `pks` and return their new `sent_seq` (pk -> seq), in
    one statement: the ORM's UPDATE with `RETURNING` (PostgreSQL; SQLite since 3.35).

    Why: the sequence numbers were read back by a SELECT of their own after the UPDATEs, one
    more statement (and, on the database thread, one more wait) per batch of booting chargers
    and per tick. What RETURNING gives is what that SELECT read: the rows are locked by this
    transaction from the UPDATE on. A SQLite older than 3.35 has no RETURNING (Django's flag for
    it is the INSERT's): there the UPDATE and the SELECT go as before.
    """
    if not connection.features.can_return_columns_from_insert:
        rows_update(pks, **values)
        return dict(LimitState.objects.filter(pk__among=list(pks)).values_list("pk", "sent_seq"))
    query = UpdateQuery(LimitState)
    query.add_q(Q(pk__among=list(pks)))
    query.add_update_values(values)
    compiler = query.get_compiler(connection.alias)
    compiler.pre_sql_setup()
    sql, params = compiler.as_sql()
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING {quote(str(LimitState._meta.pk.column))}, {quote('sent_seq')}", params)
        return dict(cursor.fetchall())


def limit_answer_record(*, ticket: SendTicket, outcome: str, detail: str = "", now: dt.datetime) -> bool:
    """Record the charger's answer (or why there is none). True when a lower limit came into force.

    Accepted: the limit is in force. Rejected, NotSupported, CALLERROR, not sent: the old limit
    stays in force. No answer, disconnected: the charger may or may not have applied it, so the
    higher of both stays counted until a later answer settles it.
    """
    with transaction.atomic():
        state = LimitState.objects.select_for_update().filter(pk=ticket.state_pk).first()
        answered = _answer_fields(state, ticket, outcome, detail, now)
        if state is None or answered is None:
            return False
        fields, lowered = answered
        LimitState.objects.filter(pk=state.pk).update(**fields)
    return lowered


@dataclass(frozen=True, slots=True)
class Answer:
    """A charger's answer to a profile (or why there is none), for `limit_answers_record`."""

    ticket: SendTicket
    outcome: str
    detail: str = ""


def limit_answers_record(answers: list[Answer], *, now: dt.datetime) -> bool:
    """`limit_answer_record` for many answers in one transaction: the rows are read (and, where
    the database can, locked in primary-key order, as the tick locks them) in one query, the
    answers applied in the order given, and the rows written with one UPDATE per distinct set of
    values (a limit cut's answers are mostly alike). True when any lower limit came into force.
    """
    if not answers:
        return False
    pks = sorted({answer.ticket.state_pk for answer in answers})
    lowered = False
    written: dict[int, dict[str, object]] = {}
    with transaction.atomic():
        states: dict[int, LimitState] = {}
        for chunk in chunks(pks):
            states.update((row.pk, row) for row in LimitState.objects.select_for_update().filter(pk__among=chunk)
                          .order_by("pk").only(*_ANSWER_READS))
        for answer in answers:
            state = states.get(answer.ticket.state_pk)
            answered = _answer_fields(state, answer.ticket, answer.outcome, answer.detail, now)
            if state is None or answered is None:
                continue
            fields, low = answered
            lowered = lowered or low
            for name, value in fields.items():  # a later answer for the same row sees this one
                setattr(state, name, value)
            written.setdefault(state.pk, {}).update(fields)
        groups: dict[tuple[tuple[str, object], ...], list[int]] = {}
        for pk, fields in written.items():
            groups.setdefault(tuple(sorted(fields.items())), []).append(pk)
        for values, group in groups.items():
            rows_update(group, **dict(values))
    return lowered


# The columns `_answer_fields` reads (any other would cost a query per row).
_ANSWER_READS = ("id", "connector_id", "transaction_id", "sent_seq", "in_force_a", "pending_max_a", "unsettled_a",
                 "failures")


def _answer_fields(
    state: LimitState | None, ticket: SendTicket, outcome: str, detail: str, now: dt.datetime
) -> tuple[dict[str, object], bool] | None:
    """The row's fields after this answer, and whether a lower limit came into force; None when
    the row is gone or now belongs to another transaction (the one answered has ended)."""
    if state is None or (state.connector_id != 0 and state.transaction_id != ticket.transaction_id):
        return None
    fields: dict[str, object] = {"last_status": outcome, "last_detail": detail[:200], "last_answer_at": now}
    latest = ticket.seq == state.sent_seq
    lowered = False
    if outcome == AnswerStatus.ACCEPTED:
        lowered = state.held_a is not None and ticket.limit_a < state.held_a
        # Answers come in order: anything unsettled was sent before this profile, which replaced it.
        fields.update(in_force_a=ticket.limit_a, in_force_paused=ticket.paused, in_force_since=now, failures=0,
                      retry_at=None, unsettled_a=None)
        if state.in_force_a is None or ticket.limit_a > state.in_force_a:
            fields["raised_at"] = now
        if latest:
            fields.update(pending_a=None, pending_deadline=None, pending_max_a=None)
    else:
        failures = state.failures + 1
        fields.update(failures=failures, retry_at=now + dt.timedelta(seconds=backoff_s(failures)))
        unsettled = state.unsettled_a
        if outcome not in _SETTLING:
            unsettled = ticket.limit_a if unsettled is None else max(unsettled, ticket.limit_a)
            fields["unsettled_a"] = unsettled
        if latest:
            fields.update(pending_a=None, pending_deadline=None,
                          pending_max_a=state.pending_max_a if outcome not in _SETTLING else unsettled)
    return fields, lowered


def limit_expire_unanswered(*, now: dt.datetime) -> int:
    """Profiles past their deadline with no answer at all (the process holding the link died):
    nothing in flight any more, but their value stays counted (`pending_max_a`)."""
    expired = list(LimitState.objects.filter(pending_a__isnull=False, pending_deadline__lt=now)
                   .values_list("pk", "failures", "pending_a", "unsettled_a"))
    for pk, failures, pending, unsettled in expired:
        assert pending is not None  # noqa: S101 - filtered on pending_a not null
        LimitState.objects.filter(pk=pk, pending_deadline__lt=now).update(
            unsettled_a=pending if unsettled is None else max(pending, unsettled),
            pending_a=None, pending_deadline=None, last_status=AnswerStatus.NO_ANSWER,
            last_detail="no answer before the deadline", last_answer_at=now, failures=failures + 1,
            retry_at=now + dt.timedelta(seconds=backoff_s(failures + 1)),
        )
    return len(expired)


def backoff_s(failures: int) -> float:
    return min(MAX_BACKOFF_S, 2.0 ** max(0, failures - 1))


class SetpointRow(NamedTuple):
    """One decision for the history (the columns of `Setpoint`)."""

    timestamp: dt.datetime
    charger_id: int
    connector_id: int
    transaction_id: int | None
    limit_a: float
    paused: bool
    binding: str
    overdraw: bool
    sent: bool
    status: str


def setpoints_record(rows: Sequence[SetpointRow]) -> None:
    """Append decisions to the history as plain rows: a limit cut on 5,000 chargers appends
    5,000, and building a model instance for each was a tenth of that tick's CPU."""
    insert_rows(Setpoint, SetpointRow._fields, rows)


def setpoints_prune(*, now: dt.datetime) -> int:
    days = SiteSettings.load().setpoint_retention_days
    deleted, _ = Setpoint.objects.filter(timestamp__lt=now - dt.timedelta(days=days)).delete()
    return deleted


def site_record_rotation(*, last_rotation_at: float | None) -> None:
    SiteSettings.objects.filter(pk=1).update(last_rotation_at=last_rotation_at)
