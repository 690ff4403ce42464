"""Writes about chargers: connection lifecycle, registration, status, message log.

Every caller (the OCPP consumer, admin actions, tasks, commands) goes through these
functions so that the rules live in one place.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.functions import Lower
from django.utils import timezone

from chargers.bulkinsert import insert_new, insert_rows, update_rows
from chargers.models import (
    AutoConfigurationKey,
    Charger,
    ConfigurationKey,
    Connector,
    OcppMessage,
    RegistrationStatus,
)

logger = logging.getLogger(__name__)


class ConnectionRefused(Exception):
    """The websocket handshake must be refused; `http_status` says how."""

    def __init__(self, reason: str, http_status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


@dataclass(frozen=True)
class ConnectionGrant:
    charger_pk: int
    # The consumer that held this charger's websocket until now, to be told to close.
    replaced_channel: str


def parse_basic_auth(header_value: bytes | None) -> tuple[str, str] | None:
    """Decode an HTTP Basic `Authorization` header into (user, password)."""
    if not header_value:
        return None
    scheme, _, encoded = header_value.decode("latin-1").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


@dataclass(frozen=True)
class ChargerIdentity:
    """Who a handshake claims to be, as stored: what the password check needs, and the
    registration the connection's acceptance checks start from."""

    charger_pk: int
    charge_point_id: str  # the stored spelling (identities are case-insensitive)
    password_hash: str
    registered: bool = False  # created by this handshake (OCPP_UNKNOWN_CHARGERS accept/pending)
    registration_status: str = ""


_IDENTITY_FIELDS = ("pk", "charge_point_id", "password_hash", "registration_status")


def _registration_refusal(charge_point_id: str, may_register: bool) -> ConnectionRefused | None:
    """Why an unknown charger may not be registered (OCPP_UNKNOWN_CHARGERS, the address's rate), or None."""
    if settings.OCPP_UNKNOWN_CHARGERS == "reject":
        return ConnectionRefused(f"unknown charge point {charge_point_id!r}", 404)
    if not may_register:
        return ConnectionRefused("too many new charge point ids from this address; retry in a minute")
    return None


def _register_many(charge_point_ids: Sequence[str]) -> list[ChargerIdentity]:
    """Register unknown chargers (not refused, none stored yet), as accepted or pending by
    OCPP_UNKNOWN_CHARGERS: one INSERT for a new fleet's batch, one SELECT for their primary keys
    (in the order given), not one statement per charger. Another process registering one of
    them meanwhile fails it on the unique id: the batcher then runs each request alone, and
    that one finds the stored row when its handshake is retried."""
    if not charge_point_ids:
        return []
    status = (RegistrationStatus.ACCEPTED if settings.OCPP_UNKNOWN_CHARGERS == "accept"
              else RegistrationStatus.PENDING)
    for charge_point_id in charge_point_ids:
        logger.info("registering unknown charge point %s as %s", charge_point_id, status)
    insert_new(Charger, [
        {"charge_point_id": charge_point_id, "registration_status": status,
         "heartbeat_interval_s": settings.OCPP_HEARTBEAT_INTERVAL}
        for charge_point_id in charge_point_ids
    ])
    registered = {row[1]: _identity(row) for row in Charger.objects.filter(
        charge_point_id__among=set(charge_point_ids)).values_list(*_IDENTITY_FIELDS)}
    return [dataclasses.replace(registered[charge_point_id], registered=True) for charge_point_id in charge_point_ids]


def _identity(row: Sequence[Any]) -> ChargerIdentity:
    pk, stored_id, password_hash, status = row
    return ChargerIdentity(pk, stored_id, password_hash, registration_status=status)


@dataclass(frozen=True, eq=False)
class IdentifyRequest:
    """One handshake to identify (keyed by identity: two handshakes are two requests)."""

    charge_point_id: str
    may_register: bool = True


def chargers_identify_many(
    requests: Sequence[IdentifyRequest],
) -> dict[IdentifyRequest, ChargerIdentity | ConnectionRefused]:
    """Find the chargers of the handshakes arriving together, or register them: each request's
    identity, or the ConnectionRefused that refuses it (a result, not an exception).

    Unknown ids follow OCPP_UNKNOWN_CHARGERS: `reject` refuses (OCPP-J §3.2 says 404;
    Daphne can only answer 403), `accept`/`pending` register the charger unless the request
    `may_register` is false (its address registered too many already: a script inventing ids
    must not fill the charger table). The lookup ignores case: the identity is a CiString, and
    `cp-1` must not become a second charger next to `CP-1`. The ids stored as spelled are read in
    one SELECT (a reconnect storm), the others in one more by their lower case (indexed), and the
    new ones registered in one INSERT (a new fleet), in one transaction."""
    found = {row[1]: _identity(row) for row in Charger.objects.filter(
        charge_point_id__among={request.charge_point_id for request in requests}).values_list(*_IDENTITY_FIELDS)}
    identified: dict[IdentifyRequest, ChargerIdentity | ConnectionRefused] = {
        request: found[request.charge_point_id] for request in requests if request.charge_point_id in found}
    others = [request for request in requests if request not in identified]
    if others:
        with transaction.atomic():
            # Not stored as spelled (the SELECT above): in another letter case (one indexed
            # SELECT for all), registered by an earlier request of this batch, or new.
            otherwise = {row[1].lower(): _identity(row) for row in Charger.objects.alias(
                id_lower=Lower("charge_point_id")).filter(
                id_lower__in={request.charge_point_id.lower() for request in others}).order_by().values_list(
                *_IDENTITY_FIELDS)}
            new: dict[str, list[IdentifyRequest]] = {}  # lower-case id -> its requests, first registers it
            for request in others:
                key = request.charge_point_id.lower()
                if key in otherwise:
                    identified[request] = otherwise[key]
                elif key in new:
                    new[key].append(request)
                else:
                    refusal = _registration_refusal(request.charge_point_id, request.may_register)
                    if refusal is not None:
                        identified[request] = refusal
                    else:
                        new[key] = [request]
            registered_now = _register_many([requests[0].charge_point_id for requests in new.values()])
            for registered, (first, *later) in zip(registered_now, new.values(), strict=True):
                identified[first] = registered
                for request in later:  # a second handshake of the same new id finds it registered
                    identified[request] = dataclasses.replace(registered, registered=False)
    return identified


# Successful verifications, so that a reconnecting charger does not cost another
# 1,000,000-round hash: (charger pk, stored hash, digest of the password) → expiry.
_VERIFIED: dict[tuple[int, str, bytes], float] = {}
_VERIFIED_TTL_S = 900.0
_VERIFIED_MAX = 10_000


def charger_password_ok(*, identity: ChargerIdentity, credentials: tuple[str, str] | None) -> bool:
    """HTTP Basic check of security profile 1 (user = the charge point id, §6.2.2).

    CPU only, no database: the consumer runs it in a thread pool so that a slow hash
    never holds the single database thread every other charger's messages wait on.
    """
    known = charger_password_known(identity=identity, credentials=credentials)
    if known is not None:
        return known
    assert credentials is not None  # noqa: S101 - known is None only with credentials
    if not check_password(credentials[1], identity.password_hash):
        return False
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[_verified_key(identity, credentials[1])] = time.monotonic() + _VERIFIED_TTL_S
    return True


def charger_password_known(*, identity: ChargerIdentity, credentials: tuple[str, str] | None) -> bool | None:
    """The outcome of `charger_password_ok` when it needs no hashing (no password set, no or
    the wrong user, a password verified in the last minutes), else None. Cheap enough for
    the event loop."""
    if not identity.password_hash:
        return True
    if credentials is None:
        return False
    user, password = credentials
    if user.casefold() != identity.charge_point_id.casefold():
        return False
    if _VERIFIED.get(_verified_key(identity, password), 0.0) > time.monotonic():
        return True
    return None


def _verified_key(identity: ChargerIdentity, password: str) -> tuple[int, str, bytes]:
    return identity.charger_pk, identity.password_hash, hashlib.sha256(password.encode()).digest()


@dataclass(frozen=True)
class ConnectionRecord:
    """One websocket taking over its charger (for `chargers_connected_many`)."""

    charger_pk: int
    channel_name: str
    now: dt.datetime


def chargers_connected_many(records: Sequence[ConnectionRecord]) -> dict[ConnectionRecord, ConnectionGrant]:
    """Record that these websockets, accepted at the same time, now serve their chargers; each
    replaces any older connection (its channel is in the grant, to be told to close). In one transaction:
    the rows locked and read in one SELECT (primary-key order, as every batched writer of
    charger rows locks them, so two batches never wait on each other in a cycle), written by
    one statement run per row (`update_rows`). A charger with two records in the batch is
    taken over by each in turn (the second replaces the first). A record whose charger is gone
    fails the batch (the batcher then runs each record alone: that one fails, as alone)."""
    with transaction.atomic():
        return _record_connections(records)


def _record_connections(records: Sequence[ConnectionRecord]) -> dict[ConnectionRecord, ConnectionGrant]:
    """`chargers_connected_many`'s work, inside the caller's transaction."""
    ordered = sorted(records, key=lambda record: record.charger_pk)
    held = {pk: channel if connected else "" for pk, connected, channel in Charger.objects.select_for_update()
            .filter(pk__among={record.charger_pk for record in ordered}).order_by("pk")
            .values_list("pk", "connected", "channel_name")}
    grants: dict[ConnectionRecord, ConnectionGrant] = {}
    for record in ordered:
        if record.charger_pk not in held:
            raise Charger.DoesNotExist(f"charger {record.charger_pk} is gone")
        grants[record] = ConnectionGrant(charger_pk=record.charger_pk, replaced_channel=held[record.charger_pk])
        held[record.charger_pk] = record.channel_name
    update_rows(Charger, ("connected", "channel_name", "connected_at", "last_seen"),
                [(record.charger_pk, True, record.channel_name, record.now, record.now) for record in ordered])
    return grants


@dataclass(frozen=True, eq=False)
class AdmissionRequest:
    """One websocket handshake to admit (keyed by identity: two handshakes are two requests):
    the charger it claims to be, its HTTP Basic credentials, and its connection to record."""

    charge_point_id: str
    credentials: tuple[str, str] | None
    channel_name: str
    now: dt.datetime
    may_register: bool = True


@dataclass(frozen=True)
class Admission:
    """What the handshake's step on the database decided: who the charger is; whether its
    credentials are good (None: a password to hash first, off the database thread); and, when
    they were good without hashing, the connection recorded (else None: recorded after the hash)."""

    identity: ChargerIdentity
    password_ok: bool | None
    grant: ConnectionGrant | None = None


def chargers_admitted_many(
    requests: Sequence[AdmissionRequest],
) -> dict[AdmissionRequest, Admission | ConnectionRefused]:
    """Identify the handshakes arriving together (`chargers_identify_many`) and, in the same
    transaction, record the connection of each whose credentials are settled without hashing
    (`chargers_connected_many`): one step on the database thread where a handshake took two
    in a row, each waiting for whatever that thread was running.

    Why: every charger's first frames wait for its handshake, and a reconnect storm is nearly
    all handshakes. A charger with a password not verified lately is identified only; its
    consumer hashes the password in a thread pool and records the connection after, as before.
    A failed batch (a charger deleted meanwhile, another process registering the same new id)
    is run request by request by the batcher, as each of the two steps was."""
    with transaction.atomic():
        asked = {request: IdentifyRequest(request.charge_point_id, request.may_register) for request in requests}
        found = chargers_identify_many(list(asked.values()))
        admitted: dict[AdmissionRequest, Admission | ConnectionRefused] = {}
        to_record: dict[AdmissionRequest, tuple[ChargerIdentity, ConnectionRecord]] = {}
        for request in requests:
            who = found[asked[request]]
            if isinstance(who, ConnectionRefused):
                admitted[request] = who
                continue
            password_ok = charger_password_known(identity=who, credentials=request.credentials)
            admitted[request] = Admission(who, password_ok)
            if password_ok:
                to_record[request] = (who, ConnectionRecord(who.charger_pk, request.channel_name, request.now))
        grants = _record_connections([record for _, record in to_record.values()]) if to_record else {}
    for request, (who, record) in to_record.items():
        admitted[request] = Admission(who, True, grants[record])
    return admitted


def charger_disconnect(*, charger_pk: int, channel_name: str, now: dt.datetime) -> bool:
    """Mark the charger offline unless a newer connection already took over.

    The conditional update is what keeps a replaced consumer's late disconnect from
    marking the fresh connection offline.
    """
    changed = Charger.objects.filter(pk=charger_pk, channel_name=channel_name).update(
        connected=False, channel_name="", last_seen=now
    )
    return changed == 1


def charger_touch(*, charger_pk: int, now: dt.datetime) -> None:
    Charger.objects.filter(pk=charger_pk).update(last_seen=now)


def chargers_reset_connections() -> int:
    """Mark every charger offline: run when the (single) web process starts."""
    return Charger.objects.filter(connected=True).update(connected=False, channel_name="")


# A connection writes its charger's `last_seen` at most this often (chargers.consumers): a busy
# charger's every frame was an UPDATE of its row. `last_seen` may lag the last frame by this much.
LAST_SEEN_RESOLUTION_S = 10.0


def chargers_mark_silent_offline(*, now: dt.datetime) -> list[str]:
    """Mark offline the chargers that missed several heartbeats (dead TCP, dead process)."""
    gone: list[str] = []
    for charger in Charger.objects.filter(connected=True).only("pk", "charge_point_id", "last_seen",
                                                                "heartbeat_interval_s", "channel_name"):
        silence = dt.timedelta(seconds=charger.heartbeat_interval_s * settings.OCPP_OFFLINE_AFTER_HEARTBEATS
                               + LAST_SEEN_RESOLUTION_S)
        if charger.last_seen is None or now - charger.last_seen > silence:
            if charger_disconnect(charger_pk=charger.pk, channel_name=charger.channel_name, now=now):
                gone.append(charger.charge_point_id)
    return gone


@dataclass(frozen=True)
class BootInfo:
    vendor: str
    model: str
    serial_number: str = ""
    charge_box_serial_number: str = ""
    firmware_version: str = ""
    meter_type: str = ""
    meter_serial_number: str = ""
    iccid: str = ""
    imsi: str = ""


@dataclass(frozen=True)
class BootAnswer:
    status: str  # OCPP RegistrationStatus: Accepted / Pending / Rejected
    interval_s: int


def _boot_answer(status: str, interval_s: int) -> BootAnswer:
    """The BootNotification answer of a charger registered as `status`."""
    if status == RegistrationStatus.ACCEPTED:
        return BootAnswer("Accepted", interval_s)
    answer = "Pending" if status == RegistrationStatus.PENDING else "Rejected"
    return BootAnswer(answer, settings.OCPP_PENDING_RETRY_INTERVAL)


@dataclass(frozen=True)
class BootRecord:
    """One BootNotification to record, for `charger_boot_many`."""

    charger_pk: int
    info: BootInfo
    now: dt.datetime


def charger_boot_many(records: Sequence[BootRecord]) -> dict[BootRecord, BootAnswer]:
    """Record what booting chargers say about themselves and answer each with its registration
    status, for the chargers booting at the same time, in one transaction.

    A reconnect storm boots thousands of chargers: one commit each (a WAL flush on PostgreSQL)
    was most of a web process's database thread, and then one ORM UPDATE compiled per boot.
    Now the rows are written by one statement run per row (`update_rows`, primary-key order,
    as every batched writer of charger rows does, so two batches never wait on each other in
    a cycle) and their registration read back in one SELECT: the answers are those of the rows
    as written, under the transaction's locks. A charger that is gone fails the batch (the
    batcher then runs each record alone: that one fails, as alone).
    """
    ordered = sorted(records, key=lambda record: record.charger_pk)
    columns = [*_BOOT_INFO_COLUMNS, "last_boot_at", "last_seen"]
    with transaction.atomic():
        update_rows(Charger, columns, [(record.charger_pk, *record.info.__dict__.values(), record.now, record.now)
                                       for record in ordered])
        registrations = {pk: (status, interval_s) for pk, status, interval_s in Charger.objects.filter(
            pk__among={record.charger_pk for record in ordered}).values_list(
            "pk", "registration_status", "heartbeat_interval_s")}
        gone = [record.charger_pk for record in ordered if record.charger_pk not in registrations]
        if gone:  # inside the transaction: the others' rows are written once, when run alone
            raise Charger.DoesNotExist(f"charger {gone[0]} is gone")
    return {record: _boot_answer(*registrations[record.charger_pk]) for record in ordered}


def _charger_column(name: str) -> str:
    field = Charger._meta.get_field(name)
    if not isinstance(field, models.Field) or field.column is None:
        raise TypeError(f"Charger.{name} is not a column")
    return field.column


# BootInfo's fields in order, as the Charger columns they are stored in.
_BOOT_INFO_COLUMNS = [_charger_column(field.name) for field in dataclasses.fields(BootInfo)]


def chargers_set_registration(*, charger_pks: list[int], status: str) -> int:
    """Accept, reject or set back to pending; the connected chargers are told once it is
    committed, so that it applies from their next frame (chargers.commands.tell_registration)."""
    count = Charger.objects.filter(pk__in=charger_pks).update(registration_status=status)
    registration_changed(charger_pks=charger_pks, status=status)
    return count


def registration_changed(*, charger_pks: list[int], status: str) -> None:
    """Once committed, tell the connected ones of these chargers their new registration status
    (for the writes that do not go through `chargers_set_registration`: forms, the API)."""
    transaction.on_commit(lambda: _tell_registration(charger_pks, status))


def _tell_registration(charger_pks: list[int], status: str) -> None:
    from chargers.commands import tell_registration  # noqa: PLC0415 - the channel layer only where needed

    tell_registration(charger_pks, accepted=status == RegistrationStatus.ACCEPTED)


def connector_statuses_update(*, statuses: Sequence[Mapping[str, Any]]) -> None:
    """Store the StatusNotifications of a write batch, in their order; an older (replayed)
    status never overwrites a newer one.

    The statements of a batch, not up to five per status: per connector only the status that would be
    left after applying them one by one (the newest; of equal times the last) is written, one
    SELECT finds the connectors that exist, one conditional UPDATE statement (`update_rows`)
    writes those, one INSERT the new ones (a boot storm's first StatusNotifications), and the
    connectors another process inserted meanwhile get the same conditional UPDATE after all.
    """
    final: dict[tuple[int, int], dict[str, Any]] = {}
    for status in statuses:
        key = (int(status["charger_pk"]), int(status["connector_id"]))
        kept = final.get(key)
        if kept is None or kept["timestamp"] <= status["timestamp"]:
            final[key] = dict(status)
    if not final:
        return
    stored = {
        (charger_pk, connector_id): (pk, status_at)
        for pk, charger_pk, connector_id, status_at in Connector.objects.filter(
            charger_id__among={charger_pk for charger_pk, _ in final}
        ).values_list("pk", "charger_id", "connector_id", "status_at")
    }
    new: dict[tuple[int, int], dict[str, Any]] = {}
    newer: list[tuple[int, dict[str, Any]]] = []
    for key, status in final.items():
        if key not in stored:
            new[key] = status
        elif stored[key][1] is None or stored[key][1] <= status["timestamp"]:
            newer.append((stored[key][0], status))
    _write_known_statuses(newer)
    if not new:
        return
    insert_new(Connector, [{"charger_id": charger_pk, "connector_id": connector_id, **_status_fields(status)}
                           for (charger_pk, connector_id), status in new.items()], ignore_conflicts=True)
    # A connector another process inserted first kept its row: ours goes in under the rule.
    _write_known_statuses([
        (pk, ours) for pk, charger_pk, connector_id, status_at, state in Connector.objects.filter(
            charger_id__among={charger_pk for charger_pk, _ in new}
        ).values_list("pk", "charger_id", "connector_id", "status_at", "status")
        if (ours := new.get((charger_pk, connector_id))) is not None
        and (status_at, state) != (ours["timestamp"], ours["status"])
    ])


def _write_known_statuses(updates: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
    """Write statuses of stored connectors (connector pk, status) under the rule of
    `connector_statuses_update`, in the UPDATE itself: a newer status another process wrote since
    the SELECT is kept. One statement for all (`update_rows`), not an ORM UPDATE compiled per
    connector: a reconnect storm's StatusNotifications, every connector of every charger, are
    nearly all of connectors already stored."""
    rows = []
    for pk, status in updates:
        fields = _status_fields(status)
        rows.append((pk, *(fields[column] for column in _STATUS_COLUMNS)))
    update_rows(Connector, _STATUS_COLUMNS, rows, unless_newer="status_at")


_STATUS_COLUMNS = ("status", "error_code", "info", "vendor_id", "vendor_error_code", "status_at")


def _status_fields(status: Mapping[str, Any]) -> dict[str, Any]:
    return {"status": status["status"], "error_code": status["error_code"], "info": status.get("info", ""),
            "vendor_id": status.get("vendor_id", ""), "vendor_error_code": status.get("vendor_error_code", ""),
            "status_at": status["timestamp"]}


def charger_set_field(*, charger_pk: int, **fields: str) -> None:
    """Update simple status fields (diagnostics/firmware status) reported by the charger."""
    Charger.objects.filter(pk=charger_pk).update(**fields)


@dataclass(frozen=True)
class ConfigurationOutcome:
    """What one automatic configuration of a charger found: each ChangeConfiguration's
    (key, value sent, status) and the keys GetConfiguration read back (key, value, read-only),
    None when that read failed."""

    charger_pk: int
    changes: tuple[tuple[str, str, str], ...]
    read: tuple[tuple[str, str, bool], ...] | None


def configuration_read_back(items: Sequence[Mapping[str, object]]) -> tuple[tuple[str, str, bool], ...]:
    """A GetConfiguration answer's `configurationKey` items as ConfigurationOutcome.read."""
    return tuple((str(item["key"]), str(item.get("value") or ""), bool(item.get("readonly", False)))
                 for item in items)


def configuration_outcomes_record(*, outcomes: Sequence[ConfigurationOutcome]) -> None:
    """Record ChangeConfiguration outcomes and GetConfiguration reads (the automatic configuration
    of many chargers, or one operator command) in one transaction: one SELECT of the stored keys,
    one UPDATE statement per set of changed columns (`update_rows`), one INSERT for new keys. Per charger the
    read back comes after the changes, as it did on the wire. A first boot wrote each outcome and
    the read in transactions of their own: five per charger, a third of a storm of new chargers'
    database time."""
    final: dict[tuple[int, str], dict[str, object]] = {}  # (charger, key) -> columns to set
    for outcome in outcomes:
        for key, value, status in outcome.changes:
            fields = final.setdefault((outcome.charger_pk, key[:50]), {})
            fields["last_change_status"] = status[:30]
            if status in {"Accepted", "RebootRequired"}:
                fields["value"] = value[:500]
        for key, value, readonly in outcome.read or ():
            fields = final.setdefault((outcome.charger_pk, key[:50]), {})
            fields["value"], fields["readonly"] = value[:500], readonly
    if not final:
        return
    now = timezone.now()
    with transaction.atomic():
        stored = {(charger_pk, key): pk for pk, charger_pk, key in ConfigurationKey.objects.filter(
            charger_id__among={charger_pk for charger_pk, _ in final}, key__among={key for _, key in final},
        ).values_list("pk", "charger_id", "key")}
        updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for where, fields in final.items():
            if where in stored:
                names = tuple(sorted(fields))
                updates.setdefault(names, []).append((stored[where], *(fields[name] for name in names), now))
        for names, rows in updates.items():
            update_rows(ConfigurationKey, (*names, "updated_at"), rows)
        insert_new(ConfigurationKey, [
            {"charger_id": charger_pk, "key": key, "value": str(fields.get("value", "")),
             "readonly": bool(fields.get("readonly", False)),
             "last_change_status": str(fields.get("last_change_status", ""))}
            for (charger_pk, key), fields in final.items() if (charger_pk, key) not in stored
        ])


def configuration_values(*, charger_pk: int, keys: list[str]) -> dict[str, str]:
    """The stored values of `keys` for a charger (as last read back from it)."""
    return dict(ConfigurationKey.objects.filter(charger_id=charger_pk, key__in=keys).values_list("key", "value"))


def configuration_values_many(*, charger_pks: Sequence[int], keys: list[str]) -> dict[int, dict[str, str]]:
    """`configuration_values` of many chargers: charger pk -> its stored values of `keys`."""
    found: dict[int, dict[str, str]] = {}
    if not keys:
        return found
    pks = list(charger_pks)
    for start in range(0, len(pks), 2000):  # SQLite binds at most 32,766 parameters
        for charger_id, key, value in ConfigurationKey.objects.filter(
                charger_id__among=pks[start:start + 2000], key__among=keys).values_list("charger_id", "key", "value"):
            found.setdefault(charger_id, {})[key] = value
    return found


def auto_configuration_keys() -> list[tuple[str, str]]:
    return list(AutoConfigurationKey.objects.filter(enabled=True).values_list("key", "value"))


# The log keeps what a maintainer needs to read, not what an attacker sends: a payload
# longer than this (as JSON) is stored as its beginning plus its size.
MESSAGE_LOG_PAYLOAD_MAX_CHARS = 8_000
# Every this many rows (at most) the log is cut back below OCPP_LOG_MAX_ROWS, so the
# cap holds at all times instead of only after the hourly prune.
_MESSAGE_LOG_PRUNE_EVERY = 100


def message_log(
    *,
    charge_point_id: str,
    charger_pk: int | None,
    direction: str,
    now: dt.datetime,
    message_type: str = "",
    unique_id: str = "",
    action: str = "",
    payload: object = None,
    error: str = "",
    touch: bool = False,
) -> None:
    """Append to the maintenance log; `touch` also records that the charger was heard.

    Every text is made storable (no NUL, no lone surrogate, no NaN: PostgreSQL and
    SQLite's JSON check refuse them) and bounded, whatever a charger sent.
    """
    message_log_many(rows=[{
        "charge_point_id": charge_point_id, "charger_pk": charger_pk, "direction": direction, "now": now,
        "message_type": message_type, "unique_id": unique_id, "action": action, "payload": payload,
        "error": error, "touch": touch,
    }])


def chargers_accepted_many(charger_pks: Sequence[int]) -> dict[int, bool]:
    """Which of `charger_pks` are accepted now: the connections' periodic re-check, one query for
    every charger of a process due at once (chargers.consumers)."""
    accepted = set(Charger.objects.filter(pk__among=list(charger_pks), registration_status=RegistrationStatus.ACCEPTED)
                   .values_list("pk", flat=True))
    return {pk: pk in accepted for pk in charger_pks}


def chargers_rows_many(charger_pks: Sequence[int]) -> dict[int, Charger]:
    """The chargers' whole rows, one query for the StartTransactions and Authorizes arriving
    together (their handlers need the charger's zone and acceptance): one hop to the database
    thread per batch instead of one per frame. A charger deleted meanwhile fails the batch
    (`Charger.DoesNotExist`; the batcher then runs the others alone)."""
    rows = {charger.pk: charger for charger in Charger.objects.filter(pk__among=list(charger_pks))}
    missing = [pk for pk in charger_pks if pk not in rows]
    if missing:
        raise Charger.DoesNotExist(f"no charger {missing[0]}")
    return rows


def message_log_many(*, rows: list[dict[str, Any]]) -> None:
    """`message_log` for many rows (the keyword arguments of each): one INSERT, one UPDATE.

    The consumer's write buffer (chargers.writebuffer) calls this once per batch. The
    chargers heard get `last_seen` = the latest `now` of the batch (a batch spans well
    under a second).
    """
    if not rows:
        return
    heard = {row["charger_pk"] for row in rows if row.get("touch") and row["charger_pk"] is not None}
    heard_at = max((row["now"] for row in rows if row.get("touch")), default=None)
    database = connections[DEFAULT_DB_ALIAS]  # not the `connection` proxy: a Local lookup per access
    if heard and database.vendor != "postgresql":
        Charger.objects.filter(pk__among=heard).update(last_seen=heard_at)
    # Plain column tuples, not model instances: building and adapting an instance per row
    # was half of a MeterValues batch's time on the database thread.
    # The payload as the JSON text made here, not the field's prepared value: SQLite's JSONField
    # stores exactly that text, and PostgreSQL's COPY reads a jsonb column from it, where the
    # field's value (psycopg's Jsonb) was encoded a second time as COPY wrote it. (Those are the
    # two databases DATABASE_URL takes: evce/env.py.)
    values = []
    for row in rows:
        payload, text = _log_payload_and_text(row.get("payload"))
        values.append((
            row["now"], storable_text(row["charge_point_id"])[:48], row["charger_pk"], row["direction"],
            row.get("message_type", ""), storable_text(row.get("unique_id", ""))[:36],
            storable_text(row.get("action", ""))[:50],
            None if payload is None else text,
            storable_text(row.get("error", ""))[:2000],
        ))
    insert_rows(OcppMessage, _LOG_COLUMNS, values)
    if database.vendor == "postgresql":
        last = _touch_and_last_log_id(database, heard, heard_at)
    else:
        last = OcppMessage.objects.order_by("-id").values_list("id", flat=True).first() or 0
    _message_log_cap(first_id=last - len(values) + 1, last_id=last)


def _touch_and_last_log_id(database: BaseDatabaseWrapper, heard: set[int], heard_at: dt.datetime | None) -> int:
    """PostgreSQL: the chargers heard get `last_seen`, and the id of the last log row this
    batch's COPY wrote comes back, in one statement (an UPDATE in a WITH runs whether or not
    its rows are read).

    Why one statement: the id was a round trip of its own after the rows' COPY, in every write
    batch, and the process's one database thread waits on each. Why the id sequence's `currval`
    (this session's last id, whatever other sessions do) and not `max(id)` of the log: that
    read walked back from the index's end over every row other web processes had written and
    not yet committed, a heap visit each (900-1,600 buffers a read in a 5,000-charger connect
    on two processes): 4-6 ms a batch, more than half of PostgreSQL's whole time in that
    connect (pg_stat_statements). The UPDATE comes after the COPY here, so the chargers' rows
    are also locked for less of the transaction.
    """
    quote = database.ops.quote_name
    charger_table, log_table = quote(Charger._meta.db_table), quote(OcppMessage._meta.db_table)
    with database.cursor() as cursor:
        cursor.execute(
            f"WITH touched AS (UPDATE {charger_table} SET {quote('last_seen')} = %s "  # noqa: S608 - our own names
            f"WHERE {quote('id')} = ANY(%s::bigint[])) SELECT currval(pg_get_serial_sequence(%s, %s))",
            [heard_at, sorted(heard), log_table, "id"])
        return int(cursor.fetchone()[0])


_LOG_COLUMNS = ("timestamp", "charge_point_id", "charger_id", "direction", "message_type", "unique_id", "action",
                "payload", "error")


def _message_log_cap(*, first_id: int, last_id: int) -> None:
    # Ids grow by one per row: cutting back to `limit - every + 1` rows whenever the ids
    # written pass a multiple of `every` keeps the table at most OCPP_LOG_MAX_ROWS rows at
    # all times (give or take one step: `_message_log_cap_lock`), for one cheap delete per
    # `every` rows.
    limit = settings.OCPP_LOG_MAX_ROWS
    every = min(_MESSAGE_LOG_PRUNE_EVERY, max(1, limit // 10))
    cutoff = last_id - limit + every - 1
    if cutoff >= 1 and last_id // every > (first_id - 1) // every:  # (ids start at 1: below, nothing to cut)
        if not _message_log_cap_lock():
            return  # another web process is cutting the log back in its open batch
        OcppMessage.objects.filter(id__lte=cutoff).delete()


# Key of the PostgreSQL advisory lock the web processes cut the message log back under.
MESSAGE_LOG_CAP_LOCK = 0x0CC9_106C


def _message_log_cap_lock() -> bool:
    """PostgreSQL: whether this transaction may cut the message log back now (an advisory lock
    held until it ends; False when another process's batch holds it). SQLite: always (it has
    one writer at a time).

    Why: two web processes crossing a multiple of the prune step together each deleted the
    same oldest rows, locking them row by row in different orders, and PostgreSQL killed one
    as a deadlock (its whole write batch then went again row by row; seen in the scale
    benchmark at 5,000 chargers). Skipping the locked rows (`SELECT ... FOR UPDATE SKIP
    LOCKED` inside the DELETE) cured that, but cost 9-11 ms per cut of 100 rows against
    0.3-0.4 ms for the plain range delete (psql, 92,000 rows): at 1,000 MeterValues/s, two
    log rows each, the cuts were half of the database threads' time (bench_scale, 1,000
    chargers). Under this lock one process cuts at a time, with the plain delete; one that
    finds it taken skips its cut, and the table may then hold up to one prune step (100 rows)
    more than OCPP_LOG_MAX_ROWS until the next cut, 100 rows later.
    """
    database = connections[DEFAULT_DB_ALIAS]
    if database.vendor != "postgresql":
        return True
    with database.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [MESSAGE_LOG_CAP_LOCK])
        return bool(cursor.fetchone()[0])


def storable_text(value: str) -> str:
    """`value` with NUL characters and lone surrogates replaced by U+FFFD."""
    if value.isascii() and "\x00" not in value:
        return value
    return "".join("\ufffd" if char == "\x00" or "\ud800" <= char <= "\udfff" else char for char in value)


def _storable(value: object, depth: int = 0) -> object:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if depth > 20:
        return "…"
    if isinstance(value, list | tuple):
        return [_storable(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {storable_text(str(key)): _storable(item, depth + 1) for key, item in value.items()}
    return storable_text(str(value))


def log_payload(payload: object) -> object:
    """What the log stores for `payload`: the value itself, or its head when too long."""
    return _log_payload_and_text(payload)[0]


def _log_payload_and_text(payload: object) -> tuple[object, str]:
    """`log_payload(payload)` and its JSON text.

    Most payloads (a frame's JSON values) are storable as they are: one C-speed encode
    shows it (no NaN, no NUL, which JSON writes as \\u0000, no lone surrogate, which
    UTF-8 cannot encode); the others are walked and made storable first.
    """
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        text.encode("utf-8")
        clean = payload if "\\u0000" not in text else None
    except (TypeError, ValueError):  # not JSON as it is (UnicodeEncodeError is a ValueError)
        clean = None
    if clean is None:
        clean = _storable(payload)
        text = json.dumps(clean, ensure_ascii=False, separators=(",", ":"))
    if len(text) <= MESSAGE_LOG_PAYLOAD_MAX_CHARS:
        return clean, text
    head = {"truncated": True, "chars": len(text), "head": text[:MESSAGE_LOG_PAYLOAD_MAX_CHARS]}
    return head, json.dumps(head, ensure_ascii=False, separators=(",", ":"))


def message_log_prune(*, now: dt.datetime) -> int:
    """Drop log rows older than the retention period, then keep at most OCPP_LOG_MAX_ROWS."""
    cutoff = now - dt.timedelta(days=settings.OCPP_LOG_RETENTION_DAYS)
    deleted, _ = OcppMessage.objects.filter(timestamp__lt=cutoff).delete()
    limit = settings.OCPP_LOG_MAX_ROWS
    oldest_kept = list(OcppMessage.objects.order_by("-id").values_list("id", flat=True)[limit : limit + 1])
    if oldest_kept:
        extra, _ = OcppMessage.objects.filter(id__lte=oldest_kept[0]).delete()
        deleted += extra
    return deleted

