"""Writes about charging sessions: start, stop, meter values.

Chargers replay queued transaction messages after an outage, sometimes twice: these
functions take the charger's own timestamps and are idempotent where a replay can repeat.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.db import transaction as db_transaction
from django.utils.dateparse import parse_datetime

from badges.services import AuthorizationStatus, IdTagInfo, badge_authorize
from chargers.models import Charger
from transactions.models import MeterSample, Transaction, TransactionState

logger = logging.getLogger(__name__)


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
    session whose idTagInfo is not Accepted, and the record keeps what happened.
    """
    info = _authorize_for(charger, id_tag, now)
    with db_transaction.atomic():
        existing = Transaction.objects.filter(
            charger=charger, connector_id=connector_id, id_tag=id_tag,
            start_time=timestamp, meter_start_wh=meter_start_wh,
        ).first()
        if existing is not None:
            # The same StartTransaction replayed: answer with the id already issued.
            return StartAnswer(existing.pk, info)
        record = Transaction.objects.create(
            charger=charger,
            connector_id=connector_id,
            id_tag=id_tag,
            id_tag_status=info.status,
            meter_start_wh=meter_start_wh,
            start_time=timestamp,
            reservation_id=reservation_id,
            state=TransactionState.ACTIVE,
        )
    return StartAnswer(record.pk, info)


def _authorize_for(charger: Charger, id_tag: str, now: dt.datetime) -> IdTagInfo:
    if not charger.is_accepted:
        return IdTagInfo(AuthorizationStatus.INVALID)
    return badge_authorize(id_tag=id_tag, now=now)


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
    """Close a transaction; an id we never issued is recorded as UNMATCHED, never refused."""
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
        if record.state == TransactionState.ACTIVE:
            record.state = TransactionState.COMPLETED
        record.save()
    meter_values_record(
        charger=charger, connector_id=record.connector_id, transaction_id=record.pk,
        meter_values=transaction_data,
    )
    if id_tag is None:
        return None
    return _authorize_for(charger, id_tag, now)


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


def meter_values_record(
    *,
    charger: Charger,
    connector_id: int,
    transaction_id: int | None,
    meter_values: Iterable[Mapping[str, object]],
) -> int:
    """Store every sampledValue of `meter_values` (OCPP camelCase), linked to our transaction.

    Samples that cannot be parsed as numbers are still stored (raw_value) so that nothing a
    charger reports is lost; a transaction id we did not issue is kept unlinked.
    """
    transaction = None
    if transaction_id is not None:
        transaction = Transaction.objects.filter(pk=transaction_id, charger=charger).first()
    samples = [
        _sample(charger, connector_id, transaction, entry, sampled)
        for entry in meter_values
        for sampled in entry.get("sampledValue", [])  # type: ignore[union-attr]
    ]
    MeterSample.objects.bulk_create(samples)
    return len(samples)


def _sample(
    charger: Charger,
    connector_id: int,
    transaction: Transaction | None,
    entry: Mapping[str, object],
    sampled: Mapping[str, object],
) -> MeterSample:
    raw = str(sampled.get("value", ""))
    try:
        value: float | None = float(raw)
    except ValueError:
        value = None
    timestamp = entry.get("timestamp")
    parsed = parse_datetime(timestamp) if isinstance(timestamp, str) else None
    return MeterSample(
        charger=charger,
        connector_id=connector_id,
        transaction=transaction,
        timestamp=parsed or dt.datetime.now(dt.UTC),
        measurand=str(sampled.get("measurand", "Energy.Active.Import.Register")),
        phase=str(sampled.get("phase", "")),
        unit=str(sampled.get("unit", "")),
        context=str(sampled.get("context", "")),
        location=str(sampled.get("location", "")),
        value=value,
        raw_value=raw[:2000],
    )
