"""Writes about chargers: connection lifecycle, registration, status, message log.

Every caller (the OCPP consumer, admin actions, tasks, commands) goes through these
functions so that the rules live in one place.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

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


def charger_connect(
    *, charge_point_id: str, channel_name: str, credentials: tuple[str, str] | None, now: dt.datetime
) -> ConnectionGrant:
    """Admit a websocket for `charge_point_id`, or raise ConnectionRefused.

    1. Unknown ids follow OCPP_UNKNOWN_CHARGERS: `reject` answers the handshake with 404
       (OCPP-J §3.2), `accept`/`pending` register the charger.
    2. A charger with a password (security profile 1) must present it with HTTP Basic,
       user = its charge point id.
    3. The new connection replaces any previous one for the same id.
    """
    with transaction.atomic():
        charger = Charger.objects.select_for_update().filter(charge_point_id=charge_point_id).first()
        if charger is None:
            charger = _register_unknown(charge_point_id)
        if charger.password_hash:
            if credentials is None:
                raise ConnectionRefused("HTTP Basic credentials required", 401)
            user, password = credentials
            if user != charge_point_id or not charger.check_password(password):
                raise ConnectionRefused("bad credentials", 401)
        replaced = charger.channel_name if charger.connected else ""
        charger.connected = True
        charger.channel_name = channel_name
        charger.connected_at = now
        charger.last_seen = now
        charger.save(update_fields=["connected", "channel_name", "connected_at", "last_seen"])
    return ConnectionGrant(charger_pk=charger.pk, replaced_channel=replaced)


def _register_unknown(charge_point_id: str) -> Charger:
    policy = settings.OCPP_UNKNOWN_CHARGERS
    if policy == "reject":
        raise ConnectionRefused(f"unknown charge point {charge_point_id!r}", 404)
    status = RegistrationStatus.ACCEPTED if policy == "accept" else RegistrationStatus.PENDING
    logger.info("registering unknown charge point %s as %s", charge_point_id, status)
    return Charger.objects.create(
        charge_point_id=charge_point_id,
        registration_status=status,
        heartbeat_interval_s=settings.OCPP_HEARTBEAT_INTERVAL,
    )


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


def chargers_mark_silent_offline(*, now: dt.datetime) -> list[str]:
    """Mark offline the chargers that missed several heartbeats (dead TCP, dead process)."""
    gone: list[str] = []
    for charger in Charger.objects.filter(connected=True).only("pk", "charge_point_id", "last_seen",
                                                                "heartbeat_interval_s", "channel_name"):
        silence = dt.timedelta(seconds=charger.heartbeat_interval_s * settings.OCPP_OFFLINE_AFTER_HEARTBEATS)
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


def charger_boot(*, charger_pk: int, info: BootInfo, now: dt.datetime) -> BootAnswer:
    """Record what the charger says about itself and answer with its registration status."""
    charger = Charger.objects.get(pk=charger_pk)
    for field, value in info.__dict__.items():
        setattr(charger, field, value)
    charger.last_boot_at = now
    charger.last_seen = now
    charger.save()
    if charger.registration_status == RegistrationStatus.ACCEPTED:
        return BootAnswer("Accepted", charger.heartbeat_interval_s)
    status = "Pending" if charger.registration_status == RegistrationStatus.PENDING else "Rejected"
    return BootAnswer(status, settings.OCPP_PENDING_RETRY_INTERVAL)


def chargers_set_registration(*, charger_pks: list[int], status: str) -> int:
    return Charger.objects.filter(pk__in=charger_pks).update(registration_status=status)


def connector_status_update(
    *,
    charger_pk: int,
    connector_id: int,
    status: str,
    error_code: str,
    info: str = "",
    vendor_id: str = "",
    vendor_error_code: str = "",
    timestamp: dt.datetime,
) -> Connector:
    """Store a StatusNotification; an older replayed one never overwrites a newer status."""
    connector, _ = Connector.objects.get_or_create(charger_id=charger_pk, connector_id=connector_id)
    if connector.status_at is not None and timestamp < connector.status_at:
        return connector
    connector.status = status
    connector.error_code = error_code
    connector.info = info
    connector.vendor_id = vendor_id
    connector.vendor_error_code = vendor_error_code
    connector.status_at = timestamp
    connector.save()
    return connector


def charger_set_field(*, charger_pk: int, **fields: str) -> None:
    """Update simple status fields (diagnostics/firmware status) reported by the charger."""
    Charger.objects.filter(pk=charger_pk).update(**fields)


def configuration_record(*, charger_pk: int, key: str, value: str | None, status: str) -> None:
    """Remember a ChangeConfiguration outcome (Accepted / RebootRequired / Rejected / …)."""
    config, _ = ConfigurationKey.objects.get_or_create(charger_id=charger_pk, key=key)
    if value is not None and status in {"Accepted", "RebootRequired"}:
        config.value = value
    config.last_change_status = status
    config.save()


def configuration_store_read(*, charger_pk: int, keys: list[dict[str, object]]) -> None:
    """Store a GetConfiguration answer (camelCase `configurationKey` items)."""
    for item in keys:
        config, _ = ConfigurationKey.objects.get_or_create(charger_id=charger_pk, key=str(item["key"]))
        config.value = str(item.get("value") or "")
        config.readonly = bool(item.get("readonly", False))
        config.save()


def auto_configuration_keys() -> list[tuple[str, str]]:
    return list(AutoConfigurationKey.objects.filter(enabled=True).values_list("key", "value"))


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
    """Append to the maintenance log; `touch` also records that the charger was heard."""
    if touch and charger_pk is not None:
        Charger.objects.filter(pk=charger_pk).update(last_seen=now)
    OcppMessage.objects.create(
        timestamp=now,
        charge_point_id=charge_point_id[:48],
        charger_id=charger_pk,
        direction=direction,
        message_type=message_type,
        unique_id=unique_id[:36],
        action=action[:50],
        payload=payload,
        error=error,
    )


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

