"""Writes and reads of the proxy app (run in a worker thread from the link tasks)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, QuerySet

from chargers.models import AutoConfigurationKey, Charger, Connector, RegistrationStatus
from proxy.models import QueuedMessage, Role, TransactionIdMap, UpstreamBackend, UpstreamLink, UpstreamProfile
from transactions.models import Transaction, TransactionState

logger = logging.getLogger(__name__)

TRANSACTION_ACTIONS = frozenset({"StartTransaction", "StopTransaction", "MeterValues"})


def is_transactional(action: str, payload: dict[str, Any]) -> bool:
    """Start/Stop, and MeterValues of a transaction: queued durably while a backend is unreachable."""
    if action == "MeterValues":
        return payload.get("transactionId") is not None
    return action in TRANSACTION_ACTIONS


@dataclass(frozen=True)
class LinkConfig:
    """A link and its backend's settings, read once when the charger connects."""

    link_pk: int
    backend_pk: int
    backend_name: str
    role: str
    identity: str
    url: str
    password: str
    verify_tls: bool
    ping_interval_s: int
    message_timeout_s: float
    attempts: int
    retry_interval_s: int
    policies: dict[str, str] = field(default_factory=dict)  # action -> forward/local/refuse

    @property
    def primary(self) -> bool:
        return self.role == Role.PRIMARY

    @property
    def endpoint(self) -> str:
        from urllib.parse import quote  # noqa: PLC0415

        return f"{self.url.rstrip('/')}/{quote(self.identity, safe='')}"


def link_configs(*, charger_pk: int) -> list[LinkConfig]:
    return link_configs_of(charger_pks=[charger_pk]).get(charger_pk, [])


def link_configs_of(*, charger_pks: list[int]) -> dict[int, list[LinkConfig]]:
    """The enabled links of these chargers, per charger."""
    if not _any_link_enabled():
        return {}
    return _link_configs(UpstreamLink.objects.filter(charger_id__among=charger_pks))


def link_configs_all() -> dict[int, list[LinkConfig]]:
    """Every enabled link, per charger: what a process's relays reconcile with (a few links, read
    whole rather than filtered by the thousands of chargers a process may hold)."""
    if not _any_link_enabled():
        return {}
    return _link_configs(UpstreamLink.objects.all())


def _any_link_enabled() -> bool:
    """Whether any link is enabled: a site without one (most sites) skips the joined read of the
    links, whose compiling cost a web process 2.6 ms per batch of connecting chargers (3 % of its
    CPU in a 1,000-charger connect, py-spy). Plain SQL: the ORM's EXISTS, built and compiled
    for every batch, was still 1.5 % of a web process's CPU in a 5,000-charger connect."""
    table = connection.ops.quote_name(UpstreamLink._meta.db_table)
    enabled = connection.ops.quote_name(str(UpstreamLink._meta.get_field("enabled").column))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {table} WHERE {enabled} = %s LIMIT 1", [True])  # noqa: S608 - our names
        return cursor.fetchone() is not None


def _link_configs(links: QuerySet[UpstreamLink]) -> dict[int, list[LinkConfig]]:
    """The enabled links among `links`, per charger (their backend enabled too)."""
    from proxy.models import GROUP_OF  # noqa: PLC0415

    links = links.filter(enabled=True, backend__enabled=True).select_related("backend", "charger").order_by("pk")
    configs: dict[int, list[LinkConfig]] = {}
    for link in links:
        backend = link.backend
        configs.setdefault(link.charger_id, []).append(LinkConfig(
            link_pk=link.pk, backend_pk=backend.pk, backend_name=backend.name, role=link.role,
            identity=link.identity(link.charger.charge_point_id), url=backend.url, password=backend.password,
            verify_tls=backend.verify_tls, ping_interval_s=backend.ping_interval_s,
            message_timeout_s=backend.message_timeout_s, attempts=backend.transaction_message_attempts,
            retry_interval_s=backend.transaction_message_retry_interval_s,
            policies={action: backend.policy_for(action, link.role) for action in GROUP_OF},
        ))
    return configs


def charger_booted(*, charger_pk: int) -> bool:
    """Whether the charger is accepted and its BootNotification is known (it can be replayed)."""
    return Charger.objects.filter(pk=charger_pk, registration_status=RegistrationStatus.ACCEPTED).exclude(
        vendor="").exists()


def boot_payload(*, charger_pk: int) -> dict[str, Any]:
    """The charger's last BootNotification, as it sent it (from what the boot stored)."""
    charger = Charger.objects.get(pk=charger_pk)
    payload: dict[str, Any] = {"chargePointVendor": charger.vendor, "chargePointModel": charger.model}
    for name, attribute in (("chargePointSerialNumber", "serial_number"),
                            ("chargeBoxSerialNumber", "charge_box_serial_number"),
                            ("firmwareVersion", "firmware_version"), ("meterType", "meter_type"),
                            ("meterSerialNumber", "meter_serial_number"), ("iccid", "iccid"), ("imsi", "imsi")):
        value = getattr(charger, attribute)
        if value:
            payload[name] = value
    return payload


def status_payloads(*, charger_pk: int) -> list[dict[str, Any]]:
    """A StatusNotification per connector the charger reported, as last reported."""
    payloads = []
    for connector in Connector.objects.filter(charger_id=charger_pk).order_by("connector_id"):
        if not connector.status:
            continue
        payload: dict[str, Any] = {"connectorId": connector.connector_id, "status": connector.status,
                                   "errorCode": connector.error_code or "NoError"}
        for name, value in (("info", connector.info), ("vendorId", connector.vendor_id),
                            ("vendorErrorCode", connector.vendor_error_code)):
            if value:
                payload[name] = value
        if connector.status_at is not None:
            payload["timestamp"] = connector.status_at.isoformat()
        payloads.append(payload)
    return payloads


def link_status_set(*, link_pk: int, connected: bool, now: dt.datetime, error: str = "",
                    boot_status: str | None = None) -> bool:
    """Record the link's state; True when it changed (connected/disconnected or a new error)."""
    link = UpstreamLink.objects.filter(pk=link_pk).values("connected", "last_error").first()
    if link is None:
        return False
    changes: dict[str, Any] = {"last_error": error[:300]}
    if boot_status is not None:
        changes["backend_boot_status"] = boot_status
    if link["connected"] != connected:
        changes.update(connected=connected, status_since=now)
    UpstreamLink.objects.filter(pk=link_pk).update(**changes)
    return link["connected"] != connected or link["last_error"] != error[:300]


def links_reset_all(*, now: dt.datetime) -> int:
    """No link is connected when no process runs them (start of the run command, tests)."""
    return UpstreamLink.objects.filter(connected=True).update(connected=False, status_since=now)


# --- durable queue ------------------------------------------------------------------------


def enqueue(*, link_pk: int, backend_pk: int, action: str, payload: dict[str, Any], local_transaction_id: int | None,
            now: dt.datetime) -> tuple[int | None, bool]:
    """Queue a transaction message for a link: (its id, or None when the full queue dropped it;
    whether an older queued message was dropped to make room).

    The bound is per backend (all its links). On overflow the oldest meter values go first
    (counted on the backend); with none left, the new message is dropped (counted, logged).
    """
    with transaction.atomic():
        backend = UpstreamBackend.objects.filter(pk=backend_pk).values("queue_max_messages", "name").first()
        if backend is None:
            return None, False
        depth = QueuedMessage.objects.filter(link__backend_id=backend_pk).count()
        dropped_older = False
        if depth >= backend["queue_max_messages"]:
            oldest_meter = (QueuedMessage.objects.filter(link__backend_id=backend_pk, action="MeterValues")
                            .order_by("id").values_list("id", flat=True).first())
            if oldest_meter is None:
                UpstreamBackend.objects.filter(pk=backend_pk).update(dropped_messages=F("dropped_messages") + 1)
                logger.warning("upstream %s: queue full (%d): %s dropped", backend["name"], depth, action)
                return None, False
            QueuedMessage.objects.filter(pk=oldest_meter).delete()
            UpstreamBackend.objects.filter(pk=backend_pk).update(dropped_meter_values=F("dropped_meter_values") + 1)
            dropped_older = True
        row = QueuedMessage.objects.create(link_id=link_pk, action=action, payload=payload,
                                           local_transaction_id=local_transaction_id, created_at=now)
    return row.pk, dropped_older


def queue_depth(*, link_pk: int) -> int:
    return QueuedMessage.objects.filter(link_id=link_pk).count()


def queue_head(*, link_pk: int, limit: int = 50) -> list[QueuedMessage]:
    return list(QueuedMessage.objects.filter(link_id=link_pk).order_by("id")[:limit])


def queued_sent(*, message_pks: list[int]) -> None:
    QueuedMessage.objects.filter(pk__in=message_pks).delete()


def queued_failed(*, message_pk: int, error: str, attempts_max: int, retry_interval_s: int,
                  now: dt.datetime) -> bool:
    """One more failed attempt; True when that was the last one (the message is dropped)."""
    row = QueuedMessage.objects.filter(pk=message_pk).select_related("link").first()
    if row is None:
        return True
    attempts = row.attempts + 1
    if attempts >= attempts_max:
        row.delete()
        UpstreamBackend.objects.filter(pk=row.link.backend_id).update(dropped_messages=F("dropped_messages") + 1)
        return True
    QueuedMessage.objects.filter(pk=message_pk).update(
        attempts=attempts, last_error=error[:300],
        next_attempt_at=now + dt.timedelta(seconds=retry_interval_s * attempts))
    return False


def queued_drop(*, message_pk: int, backend_pk: int) -> None:
    QueuedMessage.objects.filter(pk=message_pk).delete()
    UpstreamBackend.objects.filter(pk=backend_pk).update(dropped_messages=F("dropped_messages") + 1)


# --- transaction ids ----------------------------------------------------------------------


def transaction_map_load(*, link_pk: int) -> dict[int, int]:
    return dict(TransactionIdMap.objects.filter(link_id=link_pk).values_list(
        "local_transaction_id", "upstream_transaction_id"))


def transaction_map_set(*, link_pk: int, local_transaction_id: int, upstream_transaction_id: int,
                        now: dt.datetime) -> None:
    try:
        TransactionIdMap.objects.update_or_create(
            link_id=link_pk, local_transaction_id=local_transaction_id,
            defaults={"upstream_transaction_id": upstream_transaction_id, "created_at": now})
    except IntegrityError:  # the link was deleted meanwhile
        logger.info("upstream link %s gone: transaction %s not mapped", link_pk, local_transaction_id)


def transaction_decided(*, transaction_pk: int, status: str) -> None:
    """The primary backend's answer to a StartTransaction is what the charger got: record it so
    the loop allocates (or not) accordingly. The transactions app owns the row; this is the
    only field the proxy writes."""
    Transaction.objects.filter(pk=transaction_pk).update(id_tag_status=status)


def active_transaction(*, charger_pk: int, connector_id: int) -> int | None:
    return (Transaction.objects.filter(charger_id=charger_pk, connector_id=connector_id,
                                       state=TransactionState.ACTIVE)
            .order_by("-start_time").values_list("pk", flat=True).first())


# --- backend charging profiles ------------------------------------------------------------


def profile_store(*, link_pk: int, connector_id: int, profile: dict[str, Any], transaction_id: int | None,
                  awaiting_id_tag: str = "", now: dt.datetime) -> None:
    """Store a backend's profile; one with the same id, or the same purpose and stack level on the
    same connector, replaces the older one (OCPP 1.6 §3.13.2)."""
    purpose = profile["chargingProfilePurpose"]
    stack_level = int(profile["stackLevel"])
    with transaction.atomic():
        UpstreamProfile.objects.filter(link_id=link_pk).filter(
            Q(charging_profile_id=profile["chargingProfileId"])
            | Q(connector_id=connector_id, purpose=purpose, stack_level=stack_level, awaiting_id_tag=awaiting_id_tag)
        ).delete()
        UpstreamProfile.objects.create(
            link_id=link_pk, connector_id=connector_id, charging_profile_id=profile["chargingProfileId"],
            purpose=purpose, stack_level=stack_level, transaction_id=transaction_id, awaiting_id_tag=awaiting_id_tag,
            profile=profile, received_at=now)


def profiles_clear(*, link_pk: int, profile_id: int | None, connector_id: int | None, purpose: str | None,
                   stack_level: int | None) -> int:
    """ClearChargingProfile's criteria (OCPP 1.6 §5.5): by id, or by the others combined."""
    rows = UpstreamProfile.objects.filter(link_id=link_pk)
    if profile_id is not None:
        rows = rows.filter(charging_profile_id=profile_id)
    else:
        if connector_id is not None:
            rows = rows.filter(connector_id=connector_id)
        if purpose is not None:
            rows = rows.filter(purpose=purpose)
        if stack_level is not None:
            rows = rows.filter(stack_level=stack_level)
    deleted, _ = rows.delete()
    return int(deleted)


def profiles_bind_remote_start(*, link_pk: int, id_tag: str, connector_id: int, transaction_id: int) -> int:
    """The profile of a RemoteStartTransaction becomes the TxProfile of the transaction it started."""
    rows = UpstreamProfile.objects.filter(link_id=link_pk, awaiting_id_tag__iexact=id_tag).filter(
        Q(connector_id=connector_id) | Q(connector_id=0))
    return rows.update(connector_id=connector_id, transaction_id=transaction_id, awaiting_id_tag="")


def profiles_end_transaction(*, transaction_id: int) -> int:
    """A TxProfile is gone when its transaction ends."""
    deleted, _ = UpstreamProfile.objects.filter(transaction_id=transaction_id, purpose="TxProfile").delete()
    return int(deleted)


def managed_configuration_keys() -> set[str]:
    """Configuration keys the controller sets on every charger (case-folded)."""
    return {key.casefold() for key in AutoConfigurationKey.objects.filter(enabled=True).values_list("key", flat=True)}
