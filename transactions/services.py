"""Writes about charging sessions: start, stop, meter values, and closing forgotten sessions.

Chargers replay queued transaction messages after an outage, sometimes twice: these
functions take the charger's own timestamps and are idempotent where a replay can repeat.

No session stays open forever. Besides the charger's own StopTransaction, a session is
closed by the system (`closed_by = system`) when:
1. its charger boots again (BootNotification) while the session is open: reason
   "charger rebooted" — a reboot ends every transaction (OCPP 1.6 §5.14);
2. the charger starts another session on the same connector: "superseded by new session";
3. for TRANSACTIONS_STALE_AFTER_HOURS nothing was heard from the charger, or its connector
   says Available and no meter value came for the session: "charger silent for N h" /
   "connector available, no stop" (beat task `transactions-close-stale`).
A system close takes the last meter reading of the session as its end (stop time and
meter value), or the moment of the event when there is none. If the charger later sends
the StopTransaction after all, the charger's values replace the system's (`closed_by =
charger`): the charger always has the last word. A session closed for a reboot that keeps
reporting meter values measured after the boot was not ended by it (some chargers resume
sessions): it is reopened.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection
from django.db import transaction as db_transaction
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Avg, Count, F, Field, Max, Min, Q
from django.db.models.functions import TruncMinute
from django.utils.dateparse import parse_datetime

from badges.models import Badge
from badges.services import AuthorizationStatus, BadgeReads, IdTagInfo, badge_authorize
from chargers.bulkinsert import insert_new_returning, insert_rows, update_rows
from chargers.models import Charger, Connector
from transactions.energy import ENERGY, POWER, Reading, register_wh, session_energy
from transactions.models import ClosedBy, MeterSample, MeterSampleMinute, Transaction, TransactionState

logger = logging.getLogger(__name__)

# A StartTransaction whose timestamp is this much older than its arrival was queued by a
# charger that was offline (OCPP 1.6 §3.7) and is a replay, not a driver waiting now.
OFFLINE_REPLAY_AGE = dt.timedelta(minutes=5)

REASON_REBOOTED = "charger rebooted"
REASON_SUPERSEDED = "superseded by new session"
REASON_AVAILABLE = "connector available, no stop"


@dataclass(frozen=True)
class StartAnswer:
    transaction_id: int
    id_tag_info: IdTagInfo


def transaction_start(
    *,
    charger: Charger,
    connector_id: int,
    id_tag: str,
    meter_start_wh: int,
    timestamp: dt.datetime,
    reservation_id: int | None,
    now: dt.datetime,
) -> StartAnswer:
    """Issue a transaction id for a StartTransaction (OCPP §4.8).

    A transaction id is issued whatever the authorization says: the charger stops a
    session whose idTagInfo is not Accepted, and the record keeps what happened. A start
    replayed after an offline period is recorded with `offline` set and the badge's status
    at the start time (`auth_status_at_start`) for review; it is never refused as
    ConcurrentTx, since it already happened.
    """
    request = StartRequest(charger, connector_id, id_tag, meter_start_wh, timestamp, reservation_id, now)
    with db_transaction.atomic():
        answer = _start(request)
    assert isinstance(answer, StartAnswer)  # noqa: S101 - alone, a start is inserted at once
    return answer


@dataclass(frozen=True, eq=False)
class StartRequest:
    """One StartTransaction to record (keyed by identity: two alike are two starts, the second a replay)."""

    charger: Charger
    connector_id: int
    id_tag: str
    meter_start_wh: int
    timestamp: dt.datetime
    reservation_id: int | None
    now: dt.datetime


def transactions_start_many(requests: Sequence[StartRequest]) -> dict[StartRequest, StartAnswer]:
    """`transaction_start` for the StartTransactions arriving together, in order, in one database
    transaction: a fleet of chargers starting sessions at once otherwise commits one each (on
    SQLite every commit also waits for the other web processes' write lock). What the starts
    read is read for the whole batch (`_BatchReads`): a start is its INSERT, plus its own
    reads only where an earlier start of the batch changed what they would find."""
    with db_transaction.atomic():
        reads = _BatchReads(requests)
        outcomes = {request: _start(request, reads) for request in requests}
        reads.flush()
    return {request: outcome if isinstance(outcome, StartAnswer) else StartAnswer(_inserted_pk(outcome.session),
                                                                                   outcome.info)
            for request, outcome in outcomes.items()}


def _inserted_pk(session: _NewSession) -> int:
    """The session's id, the transactionId its charger is told: never a made-up one."""
    if session.pk is None:
        raise RuntimeError("a session of the batch was not inserted")
    return session.pk


@dataclass
class _NewSession:
    """A session row of a batch, inserted with the batch's others (`_BatchReads.flush`): its
    values (by attname), and its primary key once inserted."""

    values: dict[str, Any]
    pk: int | None = None


class _Started(NamedTuple):
    """A start of a batch whose session row is inserted with the batch's others (`flush`)."""

    session: _NewSession
    info: IdTagInfo


# pk, state, id tag, start time, meter start, offline
_PriorRow = tuple[int, str, str, dt.datetime | None, int | None, bool]


class _BatchReads:
    """The reads of a batch of starts, done once: the badges, and the sessions on the batch's
    connectors that a start could replay or supersede (open ones, and any that started within
    the batch's span of start times). A connector a start of the batch wrote to is read again
    by the next start on it, so each start sees what the ones before it did.

    The batch's new session rows are inserted together (`flush`, one INSERT: one ORM insert per
    start was 87 % of a start's time), before anything reads the table where they would count:
    a second start on a connector of the batch, a concurrency check of the same badge."""

    def __init__(self, requests: Sequence[StartRequest]) -> None:
        self.badges = BadgeReads()
        self._unsaved: list[_NewSession] = []
        self._written: set[tuple[int, int]] = set()
        self._prior: dict[tuple[int, int], list[_PriorRow]] = {}
        if not requests:
            return
        earliest = min(request.timestamp for request in requests)
        latest = max(request.timestamp for request in requests)
        for pk, charger_pk, connector_id, state, tag, started, meter_start, offline in Transaction.objects.filter(
            Q(state=TransactionState.ACTIVE) | Q(start_time__gte=earliest, start_time__lte=latest),
            charger_id__among={request.charger.pk for request in requests},
        ).order_by("pk").values_list("pk", "charger_id", "connector_id", "state", "id_tag", "start_time",
                                      "meter_start_wh", "offline"):
            self._prior.setdefault((charger_pk, connector_id), []).append(
                (pk, state, tag, started, meter_start, offline))

    def prior(self, request: StartRequest) -> list[_PriorRow]:
        """This start's replay candidates and open sessions on its connector, in pk order."""
        key = (request.charger.pk, request.connector_id)
        if key in self._written:
            self.flush()
            return _prior_of(request)
        self._written.add(key)
        return [row for row in self._prior.get(key, [])
                if (row[2], row[3], row[4]) == (request.id_tag, request.timestamp, request.meter_start_wh)
                or (row[1] == TransactionState.ACTIVE and row[3] is not None
                    and row[3] < request.timestamp)]

    def insert_later(self, session: _NewSession) -> None:
        self._unsaved.append(session)

    def before_concurrency_check(self, badge: Badge | None) -> None:
        """A badge's running sessions may be about to be counted: its new ones must be in the table."""
        if badge is None or settings.BADGES_ALLOW_CONCURRENT_TX:
            return
        if any(session.values["badge_id"] == badge.pk for session in self._unsaved):
            self.flush()

    def flush(self) -> None:
        """Insert the new session rows (their primary keys are set on them). A connector has at
        most one of them (a second start on a connector of the batch flushed the first: `prior`),
        so the keys that come back are matched by charger and connector."""
        if not self._unsaved:
            return
        by_connector = {(session.values["charger_id"], session.values["connector_id"]): session
                        for session in self._unsaved}
        if len(by_connector) != len(self._unsaved):
            raise RuntimeError("two new sessions on one connector in one insert")
        for pk, charger_pk, connector_id in insert_new_returning(
                Transaction, [session.values for session in self._unsaved], ("pk", "charger_id", "connector_id")):
            by_connector[(charger_pk, connector_id)].pk = pk
        self._unsaved.clear()


def _prior_of(request: StartRequest) -> list[_PriorRow]:
    return list(Transaction.objects.filter(
        Q(id_tag=request.id_tag, start_time=request.timestamp, meter_start_wh=request.meter_start_wh)
        | Q(state=TransactionState.ACTIVE, start_time__lt=request.timestamp),
        charger=request.charger, connector_id=request.connector_id,
    ).order_by("pk").values_list("pk", "state", "id_tag", "start_time", "meter_start_wh", "offline"))


def _start(request: StartRequest, reads: _BatchReads | None = None) -> StartAnswer | _Started:
    charger, connector_id, id_tag = request.charger, request.connector_id, request.id_tag
    timestamp, now = request.timestamp, request.now
    offline = now - timestamp > OFFLINE_REPLAY_AGE
    # One read for both: this very start recorded already (a replay), and older open sessions
    # on the connector (superseded by this one).
    replayed, superseded = None, []
    for pk, state, row_tag, start_time, meter_start_wh, was_offline in (
        reads.prior(request) if reads is not None else _prior_of(request)
    ):
        if (row_tag, start_time, meter_start_wh) == (id_tag, timestamp, request.meter_start_wh):
            replayed = replayed or (pk, was_offline)
        elif state == TransactionState.ACTIVE:
            superseded.append(pk)
    badge_reads = reads.badges if reads is not None else BadgeReads()
    badge = badge_reads.find(id_tag)
    if reads is not None:  # the replay's authorization counts running sessions too
        reads.before_concurrency_check(badge)
    if replayed is not None:
        # The same StartTransaction replayed: answer with the id already issued.
        info = _authorize_for(charger, id_tag, now, starting=True, offline=replayed[1],
                              exclude_transaction_pk=replayed[0], badge=badge, reads=badge_reads)
        return StartAnswer(replayed[0], info)
    for pk in superseded:  # a new session on a connector: the charger is done with the older open one
        transaction_close_by_system(transaction_pk=pk, reason=REASON_SUPERSEDED, at=timestamp)
    info = _authorize_for(charger, id_tag, now, starting=True, offline=offline, badge=badge, reads=badge_reads)
    at_start = (_authorize_for(charger, id_tag, timestamp, check_concurrency=False, badge=badge, reads=badge_reads)
                if offline else info)
    values = {
        "charger_id": charger.pk,
        "connector_id": connector_id,
        "id_tag": id_tag,
        "badge_id": badge.pk if badge is not None else None,
        "id_tag_status": info.status,
        "offline": offline,
        "auth_status_at_start": at_start.status,
        "meter_start_wh": request.meter_start_wh,
        "start_time": timestamp,
        "reservation_id": request.reservation_id,
        "state": TransactionState.ACTIVE,
    }
    if reads is not None:
        session = _NewSession(values)
        reads.insert_later(session)
        return _Started(session, info)
    return StartAnswer(Transaction.objects.create(**values).pk, info)


def _authorize_for(charger: Charger, id_tag: str, now: dt.datetime, **options: object) -> IdTagInfo:
    if not charger.is_accepted:
        return IdTagInfo(AuthorizationStatus.INVALID)
    return badge_authorize(id_tag=id_tag, now=now, charger=charger, **options)  # type: ignore[arg-type]


def transaction_stop(
    *,
    charger: Charger,
    transaction_id: int,
    meter_stop_wh: int,
    timestamp: dt.datetime,
    reason: str,
    id_tag: str | None,
    transaction_data: Iterable[Mapping[str, object]],
    now: dt.datetime,
) -> IdTagInfo | None:
    """Close a transaction; an id we never issued is recorded as UNMATCHED, never refused.

    A session the system closed already (reboot, silence) takes the charger's values.
    """
    with db_transaction.atomic():
        record = (
            Transaction.objects.select_for_update()
            .filter(pk=transaction_id, charger=charger)
            .first()
        )
        if record is None:
            record = _unmatched_stop(charger, transaction_id)
        record.meter_stop_wh = meter_stop_wh
        record.stop_time = timestamp
        record.stop_reason = reason
        record.stop_id_tag = id_tag or ""
        record.closed_by = ClosedBy.CHARGER
        if record.state == TransactionState.ACTIVE:
            record.state = TransactionState.COMPLETED
        record.save()
        _store_samples(charger, record.connector_id, record, transaction_data)
        transaction_refresh_energy(transaction_pk=record.pk)
    if id_tag is None:
        return None
    return _authorize_for(charger, id_tag, now, check_concurrency=False)


def _unmatched_stop(charger: Charger, charger_transaction_id: int) -> Transaction:
    logger.warning("StopTransaction for unknown transaction %s from %s", charger_transaction_id, charger)
    existing = Transaction.objects.filter(
        charger=charger, charger_transaction_id=charger_transaction_id, state=TransactionState.UNMATCHED
    ).first()
    if existing is not None:
        return existing
    return Transaction.objects.create(
        charger=charger,
        connector_id=0,
        id_tag="",
        state=TransactionState.UNMATCHED,
        charger_transaction_id=charger_transaction_id,
    )


@dataclass(frozen=True)
class MeterValuesRequest:
    """One MeterValues message (OCPP camelCase `meterValue` list) of a charger."""

    charger_pk: int
    connector_id: int
    transaction_id: int | None
    meter_values: Iterable[Mapping[str, object]]


def meter_values_record(
    *,
    charger: Charger,
    connector_id: int,
    transaction_id: int | None,
    meter_values: Iterable[Mapping[str, object]],
) -> int:
    """Store every sampledValue of `meter_values` (OCPP camelCase), linked to our transaction.

    Samples that cannot be parsed as numbers are still stored (raw_value) so that nothing a
    charger reports is lost; a transaction id we did not issue is kept unlinked. The
    session's running figures (latest register, energy so far, peak power) follow.
    """
    request = MeterValuesRequest(charger.pk, connector_id, transaction_id, meter_values)
    return meter_values_record_many(requests=[request])[0]


# What the hot path reads of a session (the rest is deferred).
_RUNNING_FIELDS = ("id", "charger_id", "state", "closed_by", "stop_reason", "meter_start_wh", "last_sample_at",
                   "last_meter_wh", "energy_wh", "peak_power_w")


def meter_values_record_many(*, requests: list[MeterValuesRequest]) -> list[int]:
    """`meter_values_record` for many messages at once, in order: one SELECT of their
    transactions, one INSERT of all samples, then each session's running figures. Returns
    the number of samples stored per message. The OCPP consumer's write buffer calls this
    once per batch (chargers.writebuffer)."""
    wanted = {request.transaction_id for request in requests if request.transaction_id is not None}
    transactions = Transaction.objects.only(*_RUNNING_FIELDS).in_bulk(list(wanted)) if wanted else {}
    linked: list[Transaction | None] = []
    per_request: list[list[_SampleRow]] = []
    for request in requests:
        transaction = transactions.get(request.transaction_id) if request.transaction_id is not None else None
        if transaction is not None and transaction.charger_id != request.charger_pk:
            transaction = None  # another charger's transaction id: kept unlinked
        linked.append(transaction)
        per_request.append(_build_samples(request.charger_pk, request.connector_id, transaction,
                                          request.meter_values))
    insert_rows(MeterSample, _SampleRow._fields, [sample for samples in per_request for sample in samples])
    figures: dict[int, dict[str, object]] = {}  # running figures to write, per session
    for request, transaction, samples in zip(requests, linked, per_request, strict=True):
        if transaction is None or not samples:
            continue
        # A batch may hold several messages of one session: work on its latest state.
        transaction = transactions.get(transaction.pk, transaction)
        if transaction.state == TransactionState.ACTIVE:
            changed = _running_figures(transaction, [_reading(s) for s in samples])
            for name, value in changed.items():
                setattr(transaction, name, value)
            figures.setdefault(transaction.pk, {}).update(changed)
            continue
        if _runs_after_reboot(transaction, request.charger_pk, samples):
            transaction = _reopen(transaction)
            figures.setdefault(transaction.pk, {}).update(
                _running_figures(transaction, [_reading(s) for s in samples]))
        else:
            transaction = transaction_refresh_energy(transaction_pk=transaction.pk)
        transactions[transaction.pk] = transaction
    _write_running_figures(figures)
    return [len(samples) for samples in per_request]


def _write_running_figures(figures: dict[int, dict[str, object]]) -> None:
    """One UPDATE statement per set of changed fields, for every session of the batch
    (`update_rows`: one statement over arrays on PostgreSQL, run per row on SQLite). The
    running figures' columns are named after their fields."""
    groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for pk, fields in figures.items():
        if fields:
            names = tuple(sorted(fields))
            groups.setdefault(names, []).append((pk, *(fields[name] for name in names)))
    for names, rows in groups.items():
        update_rows(Transaction, names, rows)


def _db_value(ops: BaseDatabaseOperations, value: object) -> object:
    return ops.adapt_datetimefield_value(value) if isinstance(value, dt.datetime) else value


def _runs_after_reboot(transaction: Transaction, charger_pk: int, samples: list[_SampleRow]) -> bool:
    """Meter values measured after the boot that closed the session: the charger kept it running."""
    if transaction.closed_by != ClosedBy.SYSTEM or transaction.stop_reason != REASON_REBOOTED:
        return False
    booted_at = Charger.objects.filter(pk=charger_pk).values_list("last_boot_at", flat=True).first()
    return booted_at is not None and any(sample.timestamp > booted_at for sample in samples)


def _reopen(transaction: Transaction) -> Transaction:
    Transaction.objects.filter(pk=transaction.pk, state=TransactionState.COMPLETED, closed_by=ClosedBy.SYSTEM).update(
        state=TransactionState.ACTIVE, stop_time=None, meter_stop_wh=None, stop_reason="", closed_by=""
    )
    logger.info("reopened transaction %s: its charger kept it running through the reboot", transaction.pk)
    return Transaction.objects.get(pk=transaction.pk)


def _store_samples(
    charger: Charger,
    connector_id: int,
    transaction: Transaction | None,
    meter_values: Iterable[Mapping[str, object]],
) -> list[_SampleRow]:
    samples = _build_samples(charger.pk, connector_id, transaction, meter_values)
    insert_rows(MeterSample, _SampleRow._fields, samples)
    return samples


class _SampleRow(NamedTuple):
    """A MeterSample's columns, for the hot path's plain INSERT (chargers.bulkinsert)."""

    charger_id: int
    connector_id: int
    transaction_id: int | None
    timestamp: dt.datetime
    measurand: str
    phase: str
    unit: str
    context: str
    location: str
    value: float | None
    raw_value: str


def _build_samples(
    charger_pk: int,
    connector_id: int,
    transaction: Transaction | None,
    meter_values: Iterable[Mapping[str, object]],
) -> list[_SampleRow]:
    transaction_pk = transaction.pk if transaction is not None else None
    return [
        _sample(charger_pk, connector_id, transaction_pk, timestamp, sampled)
        for entry in meter_values
        for timestamp in [_entry_time(entry)]
        for sampled in _sampled_values(entry)
    ]


def _sampled_values(entry: Mapping[str, object]) -> Iterable[Mapping[str, object]]:
    """A MeterValue's sampledValue list (the OCPP schema, checked on receipt, makes it an array of objects)."""
    sampled = entry.get("sampledValue", [])
    assert isinstance(sampled, Iterable)
    return sampled


def _reading(sample: _SampleRow) -> Reading:
    return Reading(sample.timestamp, sample.measurand, sample.value, sample.unit, sample.phase)


def _running_figures(transaction: Transaction, readings: list[Reading]) -> dict[str, object]:
    """Cheap incremental update while a session runs (the fields that change); the stop
    recomputes from all samples."""
    latest = max(r.timestamp for r in readings)
    fields: dict[str, object] = {}
    if transaction.last_sample_at is None or latest >= transaction.last_sample_at:
        fields["last_sample_at"] = latest
        registers = [(r.timestamp, wh) for r in readings if (wh := register_wh(r)) is not None]
        if registers:
            last_wh = round(max(registers, key=lambda item: item[0])[1])
            fields["last_meter_wh"] = last_wh
            if transaction.meter_start_wh is not None and last_wh >= transaction.meter_start_wh:
                fields["energy_wh"] = last_wh - transaction.meter_start_wh
    peak = session_energy(meter_start_wh=None, meter_stop_wh=None, readings=readings).peak_power_w
    if peak is not None and (transaction.peak_power_w is None or peak > transaction.peak_power_w):
        fields["peak_power_w"] = peak
    return fields


def transaction_refresh_energy(*, transaction_pk: int) -> Transaction:
    """Recompute energy, latest register and peak power of a session from all its samples."""
    record = Transaction.objects.get(pk=transaction_pk)
    rows = MeterSample.objects.filter(transaction_id=transaction_pk).values_list(
        "timestamp", "measurand", "value", "unit", "phase"
    )
    figures = session_energy(
        meter_start_wh=record.meter_start_wh,
        meter_stop_wh=record.meter_stop_wh,
        readings=[Reading(*row) for row in rows],
    )
    record.energy_wh = figures.energy_wh
    record.last_meter_wh = figures.last_register_wh
    record.last_sample_at = figures.last_reading_at
    record.peak_power_w = figures.peak_power_w
    record.save(update_fields=["energy_wh", "last_meter_wh", "last_sample_at", "peak_power_w", "updated_at"])
    return record


def _entry_time(entry: Mapping[str, object]) -> dt.datetime:
    timestamp = entry.get("timestamp")
    parsed = parse_datetime(timestamp) if isinstance(timestamp, str) else None
    return parsed or dt.datetime.now(dt.UTC)


def _sample(
    charger_pk: int,
    connector_id: int,
    transaction_pk: int | None,
    timestamp: dt.datetime,
    sampled: Mapping[str, object],
) -> _SampleRow:
    raw = str(sampled.get("value", ""))
    try:
        value: float | None = float(raw)
    except ValueError:
        value = None
    return _SampleRow(
        charger_id=charger_pk,
        connector_id=connector_id,
        transaction_id=transaction_pk,
        timestamp=timestamp,
        measurand=str(sampled.get("measurand", "Energy.Active.Import.Register")),
        phase=str(sampled.get("phase", "")),
        unit=str(sampled.get("unit", "")),
        context=str(sampled.get("context", "")),
        location=str(sampled.get("location", "")),
        value=value,
        raw_value=raw[:2000],
    )


# --- closing sessions the charger forgot ---------------------------------------------------


def transaction_close_by_system(*, transaction_pk: int, reason: str, at: dt.datetime) -> bool:
    """Close an open session without a StopTransaction; False if it was closed meanwhile.

    The end is the last meter reading of the session, else `at` (the reboot, the new
    session, the last sign of life); never before the start.
    """
    with db_transaction.atomic():
        record = (
            Transaction.objects.select_for_update()
            .filter(pk=transaction_pk, state=TransactionState.ACTIVE)
            .first()
        )
        if record is None:
            return False  # the charger (or another worker) closed it first
        stop_time = record.last_sample_at or at
        if record.start_time is not None and stop_time < record.start_time:
            stop_time = record.start_time
        record.stop_time = stop_time
        record.meter_stop_wh = record.last_meter_wh
        record.stop_reason = reason
        record.closed_by = ClosedBy.SYSTEM
        record.state = TransactionState.COMPLETED
        record.save()
        transaction_refresh_energy(transaction_pk=record.pk)
    logger.info("closed transaction %s of %s: %s", transaction_pk, record.charger_id, reason)
    return True


def transactions_close_after_reboot(*, charger_pk: int) -> list[int]:
    """Close the sessions a charger had open when it booted again (recorded before the boot).

    Comparing our own record time with the boot time keeps a StartTransaction replayed just
    after the boot (queued while offline, with an old timestamp) open.
    """
    booted_at = Charger.objects.filter(pk=charger_pk).values_list("last_boot_at", flat=True).first()
    if booted_at is None:
        return []
    open_before = Transaction.objects.filter(
        charger_id=charger_pk, state=TransactionState.ACTIVE, created_at__lt=booted_at
    ).values_list("pk", flat=True)
    return [pk for pk in list(open_before)
            if transaction_close_by_system(transaction_pk=pk, reason=REASON_REBOOTED, at=booted_at)]


def transactions_close_after_reboot_many(*, charger_pks: Iterable[int]) -> dict[int, list[int]]:
    """`transactions_close_after_reboot` for many chargers booting together (a reconnect storm):
    charger pk -> the sessions closed, in a few statements whatever the number of chargers.

    One SELECT finds the open sessions recorded before their charger's last boot (none: that is
    all). They are then locked (where the database can) and closed in one transaction, each only
    if still open when locked, so a StopTransaction recorded meanwhile wins, as with
    `transaction_close_by_system`; one that arrives later replaces the system's values.
    """
    pks = list(dict.fromkeys(charger_pks))
    closed: dict[int, list[int]] = {pk: [] for pk in pks}
    found: list[tuple[int, int, dt.datetime | None]] = []
    for start in range(0, len(pks), _BATCH_ROWS):
        found.extend(Transaction.objects.filter(
            charger_id__among=pks[start:start + _BATCH_ROWS], state=TransactionState.ACTIVE,
            created_at__lt=F("charger__last_boot_at"),
        ).values_list("pk", "charger_id", "charger__last_boot_at"))
    if not found:
        return closed
    ends = {pk: booted_at for pk, _charger, booted_at in found if booted_at is not None}
    for pk, charger_id in _close_by_system_many(ends, reason=REASON_REBOOTED):
        closed[charger_id].append(pk)
    return closed


# Rows per statement of the batched closes (SQLite binds at most 32,766 parameters).
_BATCH_ROWS = 2000


def _close_by_system_many(ends: dict[int, dt.datetime], *, reason: str) -> list[tuple[int, int]]:
    """`transaction_close_by_system` for many sessions (pk -> `at`) in one transaction; returns
    (session pk, charger pk) of those closed (the others were closed meanwhile).

    The figures are the ones `transaction_close_by_system` writes: the stop from the row's last
    reading (else `at`, never before the start), then energy, latest register and peak power
    recomputed from all the session's samples (`transaction_refresh_energy`): its energy and power
    samples read in one query (the others change none of them), the time of its latest sample of
    any kind in another.
    """
    pks = sorted(ends)
    with db_transaction.atomic():
        records: list[Transaction] = []
        for start in range(0, len(pks), _BATCH_ROWS):
            rows = Transaction.objects.filter(pk__among=pks[start:start + _BATCH_ROWS], state=TransactionState.ACTIVE)
            if connection.features.has_select_for_update:
                rows = rows.select_for_update().order_by("pk")
            records.extend(rows.only("pk", "charger_id", "start_time", "last_sample_at", "last_meter_wh",
                                     "meter_start_wh"))
        if not records:
            return []
        readings: dict[int, list[Reading]] = {record.pk: [] for record in records}
        latest: dict[int, dt.datetime] = {}
        closing = list(readings)
        for start in range(0, len(closing), _BATCH_ROWS):
            samples = MeterSample.objects.filter(transaction_id__among=closing[start:start + _BATCH_ROWS])
            # Energy and power come from these two measurands only; the latest reading of any kind.
            for transaction_id, timestamp, measurand, value, unit, phase in samples.filter(
                    measurand__in=(ENERGY, POWER)).values_list(
                    "transaction_id", "timestamp", "measurand", "value", "unit", "phase"):
                readings[transaction_id].append(Reading(timestamp, measurand, value, unit, phase))
            latest.update(samples.order_by().values("transaction_id").annotate(at=Max("timestamp"))
                          .values_list("transaction_id", "at"))
        now = dt.datetime.now(dt.UTC)
        figures: dict[int, dict[str, object]] = {}
        for record in records:
            stop_time = record.last_sample_at or ends[record.pk]
            if record.start_time is not None and stop_time < record.start_time:
                stop_time = record.start_time
            energy = session_energy(meter_start_wh=record.meter_start_wh, meter_stop_wh=record.last_meter_wh,
                                    readings=readings[record.pk])
            figures[record.pk] = {
                "stop_time": stop_time, "meter_stop_wh": record.last_meter_wh, "stop_reason": reason,
                "closed_by": ClosedBy.SYSTEM.value, "state": TransactionState.COMPLETED.value,
                "energy_wh": energy.energy_wh, "last_meter_wh": energy.last_register_wh,
                "last_sample_at": latest.get(record.pk), "peak_power_w": energy.peak_power_w, "updated_at": now,
            }
        _write_closes(figures)
    for record in records:
        logger.info("closed transaction %s of %s: %s", record.pk, record.charger_id, reason)
    return [(record.pk, record.charger_id) for record in records]


def _write_closes(figures: dict[int, dict[str, object]]) -> None:
    """One UPDATE statement (executemany) for the closes, each only of a session still open."""
    if not figures:
        return
    names = sorted(next(iter(figures.values())))
    table = connection.ops.quote_name(Transaction._meta.db_table)
    assignments = ", ".join(f"{_column(name)} = %s" for name in names)
    ops = connection.ops
    params: list[list[Any]] = [[_db_value(ops, fields[name]) for name in names] + [pk, TransactionState.ACTIVE.value]
                               for pk, fields in figures.items()]
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {table} SET {assignments} WHERE id = %s AND {_column('state')} = %s", params)  # noqa: S608


def _column(name: str) -> str:
    field = Transaction._meta.get_field(name)
    assert isinstance(field, Field) and field.column  # noqa: S101 - a concrete field of the model
    return connection.ops.quote_name(field.column)


def transactions_close_stale(*, now: dt.datetime) -> list[int]:
    """Close open sessions nothing was heard of for TRANSACTIONS_STALE_AFTER_HOURS.

    1. Silent: no meter value for the session and nothing at all from its charger since the
       cutoff (the charger vanished, or is offline for good).
    2. Forgotten: no meter value for the session since the cutoff and its connector reports
       Available (nothing plugged in) although the charger is alive.
    Each close is a conditional update: a StopTransaction arriving meanwhile wins.
    """
    hours = settings.TRANSACTIONS_STALE_AFTER_HOURS
    cutoff = now - dt.timedelta(hours=hours)
    closed: list[int] = []
    candidates = Transaction.objects.filter(state=TransactionState.ACTIVE).select_related("charger")
    for record in candidates:
        session_news = max(t for t in (record.start_time, record.last_sample_at, record.created_at) if t is not None)
        if session_news >= cutoff:
            continue
        charger_news = record.charger.last_seen
        if charger_news is None or charger_news < cutoff:
            last_news = max(session_news, charger_news or session_news)
            reason = f"charger silent for {hours} h"
        elif _connector_available(record):
            last_news, reason = session_news, REASON_AVAILABLE
        else:
            continue
        if transaction_close_by_system(transaction_pk=record.pk, reason=reason, at=last_news):
            closed.append(record.pk)
    return closed


def _connector_available(record: Transaction) -> bool:
    status = Connector.objects.filter(charger_id=record.charger_id, connector_id=record.connector_id).values_list(
        "status", flat=True
    ).first()
    return status == "Available"


# --- operator decisions ---------------------------------------------------------------------


def transaction_set_vip(*, transaction: Transaction, vip: bool, by: str) -> bool:
    """Mark a running session VIP (served first in priority mode) or not; False if it is not running.

    A conditional update, so a session stopped meanwhile is left alone. The loop is asked for
    an immediate re-balance so the change takes effect now, not at the next period: asked from
    a thread of its own (loadmgmt.tasks.BackgroundRequest), since this runs on the web process's
    database thread, which every charger's frames share; when the broker is down the periodic
    tick picks it up.
    """
    changed = Transaction.objects.filter(pk=transaction.pk, state=TransactionState.ACTIVE).update(vip=vip) == 1
    if not changed:
        return False
    transaction.vip = vip
    logger.info("%s set session %s VIP %s", by, transaction.pk, "on" if vip else "off")
    from loadmgmt.tasks import REBALANCE_REQUESTS  # noqa: PLC0415 - the Celery app only where it is used

    REBALANCE_REQUESTS.ask()
    return True


# --- meter sample retention ---------------------------------------------------------------

# At most this much history is folded per run (one window per transaction), so a first run
# over months of samples proceeds in bounded steps, hour after hour, run after run.
_COMPACT_WINDOW = dt.timedelta(hours=1)
_COMPACT_WINDOWS_PER_RUN = 48


def meter_samples_compact(*, now: dt.datetime) -> int:
    """Fold raw samples older than METER_SAMPLES_RAW_DAYS into per-minute rows; returns the
    number of raw samples folded.

    1. The cutoff is the start of the minute METER_SAMPLES_RAW_DAYS before `now`.
    2. From the oldest eligible sample, one hour at a time (at most 48 hours per run): group by
       charger, connector, session, measurand, phase, unit and minute; count, min, max, mean
       of the numeric values; insert those rows and delete the raw ones in one transaction,
       so a crash or a second worker never folds a sample twice or loses one.
    3. Samples of a session still running are kept raw until it ends (its stop recomputes
       energy and peak power from them).
    """
    cutoff = (now - dt.timedelta(days=settings.METER_SAMPLES_RAW_DAYS)).replace(second=0, microsecond=0)
    eligible = MeterSample.objects.filter(timestamp__lt=cutoff).exclude(transaction__state=TransactionState.ACTIVE)
    folded = 0
    for _ in range(_COMPACT_WINDOWS_PER_RUN):
        oldest = eligible.order_by("timestamp").values_list("timestamp", flat=True).first()
        if oldest is None:
            break
        start = oldest.replace(second=0, microsecond=0)
        end = min(start + _COMPACT_WINDOW, cutoff)
        with db_transaction.atomic():
            window = eligible.filter(timestamp__gte=start, timestamp__lt=end)
            rows = (window.annotate(at=TruncMinute("timestamp", tzinfo=dt.UTC))
                    .values("charger_id", "connector_id", "transaction_id", "measurand", "phase", "unit", "at")
                    .annotate(n=Count("id"), lo=Min("value"), hi=Max("value"), mean=Avg("value"))
                    .order_by())
            MeterSampleMinute.objects.bulk_create([
                MeterSampleMinute(charger_id=row["charger_id"], connector_id=row["connector_id"],
                                  transaction_id=row["transaction_id"], minute=row["at"], measurand=row["measurand"],
                                  phase=row["phase"], unit=row["unit"], samples=row["n"], value_min=row["lo"],
                                  value_max=row["hi"], value_avg=row["mean"])
                for row in rows
            ])
            deleted, _ = window.delete()
        folded += deleted
    return folded
