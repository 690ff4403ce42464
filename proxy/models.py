"""Upstream CPO backends, the links of chargers to them, transaction id maps, the durable queue.

A link is one charger seen by one backend: the controller opens an OCPP 1.6J connection to the
backend under the charger's identity while the charger is connected here. Status fields are
written by the link's task in the Daphne process; the admin shows them read-only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from chargers.identity import BadIdentity, identity_from_path


def validate_ws_url(value: str) -> None:
    """A ws:// or wss:// URL with a host; the charger's identity is appended to its path."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as error:
        raise ValidationError(f"not a valid URL: {error}") from None
    if any(character.isspace() or not character.isprintable() for character in value):
        raise ValidationError("the URL must not contain spaces or control characters")
    if parts.scheme not in {"ws", "wss"}:
        raise ValidationError("the URL must start with ws:// or wss://")
    if not parts.hostname:
        raise ValidationError("the URL has no host")
    if parts.query or parts.fragment:
        raise ValidationError("the URL must not have a query string or fragment (the charger id is appended)")
    if port == 0:
        raise ValidationError("port 0 is not a port")


def validate_identity(value: str) -> None:
    if value:
        try:
            identity_from_path(b"/ocpp/" + value.encode("utf-8", "replace"), b"")
        except BadIdentity as bad:
            raise ValidationError(f"not a valid charge point id: {bad}") from None


class Role(models.TextChoices):
    PRIMARY = "primary", "primary (its answers and transaction ids decide)"
    MIRROR = "mirror", "mirror (notified, answers ignored)"


class Policy(models.TextChoices):
    DEFAULT = "", "role default (primary: forward; mirror: read only)"
    FORWARD = "forward", "forward to the charger and relay its answer"
    LOCAL = "local", "answer locally with a harmless reply"
    REFUSE = "refuse", "refuse with a CALLERROR"


# Backend commands in groups, each with its policy field. Smart charging is never forwarded to the
# charger: "forward" means the profile is stored and enters the allocation as a cap.
COMMAND_GROUPS: dict[str, tuple[str, ...]] = {
    "read": ("GetConfiguration", "TriggerMessage", "GetDiagnostics", "GetLocalListVersion", "GetCompositeSchedule"),
    "remote_transactions": ("RemoteStartTransaction", "RemoteStopTransaction"),
    "reset": ("Reset", "UnlockConnector", "ChangeAvailability"),
    "configuration": ("ChangeConfiguration",),
    "firmware": ("UpdateFirmware",),
    "local_list": ("SendLocalList", "ClearCache"),
    "reservation": ("ReserveNow", "CancelReservation"),
    "smart_charging": ("SetChargingProfile", "ClearChargingProfile"),
    "data_transfer": ("DataTransfer",),
}
GROUP_OF = {action: group for group, actions in COMMAND_GROUPS.items() for action in actions}
# What a mirror may do when its policy field says "role default".
MIRROR_DEFAULT_GROUPS = {"read"}


def _policy_field(what: str) -> models.CharField[str, str]:
    return models.CharField(
        max_length=10, choices=Policy.choices, blank=True, default=Policy.DEFAULT,
        help_text=f"{what}. Role default: forwarded for the primary; for a mirror "
                  + ("forwarded (reading is harmless)." if what.startswith("Read") else "refused."),
    )


class UpstreamBackend(models.Model):
    name = models.CharField(max_length=80, unique=True,
                            help_text="How the backend is called here (e.g. the CPO's name).")
    url = models.CharField(
        max_length=300, validators=[validate_ws_url], verbose_name="URL",
        help_text="OCPP 1.6J endpoint, ws:// or wss://; the charger's identity is appended "
                  "(wss://cpo.example/ocpp/ → wss://cpo.example/ocpp/CP-1).",
    )
    password = models.CharField(
        max_length=128, blank=True,
        help_text="HTTP Basic password sent to the backend (user = the charger's upstream identity); empty: no "
                  "authentication. Stored as entered: it is a credential this controller sends, not one it checks.",
    )
    verify_tls = models.BooleanField(default=True, verbose_name="verify TLS",
                                     help_text="Check the backend's certificate (wss). Untick only for a lab backend.")
    ping_interval_s = models.PositiveIntegerField(
        default=30, validators=[MaxValueValidator(3600)], verbose_name="websocket ping interval (s)",
        help_text="Websocket ping sent this often to keep the link alive and notice a dead one; 0 = none.",
    )
    message_timeout_s = models.FloatField(
        default=10.0, validators=[MinValueValidator(0.5), MaxValueValidator(120)], verbose_name="message timeout (s)",
        help_text="How long an answer from the backend is waited for. A primary's Authorize/StartTransaction answer "
                  "is awaited at most this long, then the local badge decision is used.",
    )
    transaction_message_attempts = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="A queued transaction message the backend refuses (CALLERROR) or does not answer this many times "
                  "is dropped with a log line (OCPP 1.6 TransactionMessageAttempts).",
    )
    transaction_message_retry_interval_s = models.PositiveIntegerField(
        default=10, validators=[MaxValueValidator(3600)], verbose_name="transaction message retry interval (s)",
        help_text="Wait before retrying a refused transaction message, times the attempts made "
                  "(OCPP 1.6 TransactionMessageRetryInterval).",
    )
    queue_max_messages = models.PositiveIntegerField(
        default=10_000, validators=[MinValueValidator(10), MaxValueValidator(1_000_000)],
        verbose_name="queue bound (messages)",
        help_text="Most transaction messages kept for this backend while it is unreachable (all its chargers). "
                  "On overflow the oldest meter values are dropped first (counted below).",
    )
    enabled = models.BooleanField(default=True, help_text="Unticked: no connection is opened to this backend.")
    policy_read = _policy_field("Reading: GetConfiguration, TriggerMessage, GetDiagnostics, GetLocalListVersion, "
                                "GetCompositeSchedule")
    policy_remote_transactions = _policy_field("RemoteStartTransaction, RemoteStopTransaction")
    policy_reset = _policy_field("Reset, UnlockConnector, ChangeAvailability")
    policy_configuration = _policy_field("ChangeConfiguration")
    policy_firmware = _policy_field("UpdateFirmware")
    policy_local_list = _policy_field("SendLocalList, ClearCache")
    policy_reservation = _policy_field("ReserveNow, CancelReservation")
    policy_smart_charging = _policy_field(
        "SetChargingProfile, ClearChargingProfile (never sent to the charger: stored as a cap on the local "
        "allocation)")
    policy_data_transfer = _policy_field("DataTransfer")
    dropped_meter_values = models.PositiveBigIntegerField(
        default=0, editable=False, help_text="Queued meter values dropped because the queue was full.")
    dropped_messages = models.PositiveBigIntegerField(
        default=0, editable=False,
        help_text="Transaction messages dropped: queue full without meter values to drop, refused too often, or "
                  "a transaction the backend never got an id for.")

    class Meta:
        verbose_name = "upstream backend"

    def __str__(self) -> str:
        return self.name

    def policy_for(self, action: str, role: str) -> str:
        """forward, local or refuse for a backend command `action` sent over a link of `role`."""
        group = GROUP_OF.get(action)
        if group is None:
            return Policy.REFUSE
        chosen = getattr(self, f"policy_{group}")
        if chosen:
            return str(chosen)
        if role == Role.PRIMARY or group in MIRROR_DEFAULT_GROUPS:
            return Policy.FORWARD
        return Policy.REFUSE


class UpstreamLink(models.Model):
    charger = models.ForeignKey("chargers.Charger", on_delete=models.CASCADE, related_name="upstream_links")
    backend = models.ForeignKey(UpstreamBackend, on_delete=models.CASCADE, related_name="links")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MIRROR,
                            help_text="At most one primary per charger. Without one, local badges decide.")
    upstream_identity = models.CharField(
        max_length=48, blank=True, validators=[validate_identity],
        help_text="The charge point id the backend knows; empty: the charger's own id.",
    )
    enabled = models.BooleanField(default=True)
    connected = models.BooleanField(default=False, editable=False)
    status_since = models.DateTimeField(null=True, blank=True, editable=False,
                                        help_text="Since when the link is connected (or not).")
    last_error = models.CharField(max_length=300, blank=True, editable=False)
    backend_boot_status = models.CharField(max_length=20, blank=True, editable=False,
                                           help_text="What the backend answered to the last BootNotification.")

    class Meta:
        verbose_name = "upstream link"
        constraints = [
            models.UniqueConstraint(fields=["charger", "backend"], name="proxy_one_link_per_charger_and_backend"),
            models.UniqueConstraint(fields=["charger"], condition=Q(role="primary"),
                                    name="proxy_one_primary_per_charger",
                                    violation_error_message="This charger already has a primary backend."),
        ]

    def __str__(self) -> str:
        return f"{self.charger_id} → {self.backend_id} ({self.role})"

    def identity(self, charge_point_id: str) -> str:
        return self.upstream_identity or charge_point_id


class TransactionIdMap(models.Model):
    """A local transaction (the id the charger uses) and the id one backend gave it."""

    link = models.ForeignKey(UpstreamLink, on_delete=models.CASCADE, related_name="transaction_ids")
    local_transaction_id = models.IntegerField()
    upstream_transaction_id = models.IntegerField()
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["link", "local_transaction_id"], name="proxy_one_map_per_local_tx"),
        ]
        indexes = [models.Index(fields=["link", "upstream_transaction_id"], name="proxy_map_upstream_idx")]

    def __str__(self) -> str:
        return f"{self.local_transaction_id} ↔ {self.upstream_transaction_id}"


class QueuedMessage(models.Model):
    """A transaction message waiting for a backend, in order (by id). Survives a restart."""

    link = models.ForeignKey(UpstreamLink, on_delete=models.CASCADE, related_name="queue")
    action = models.CharField(max_length=40)
    payload = models.JSONField(help_text="As the charger sent it: transaction ids are the local ones.")
    local_transaction_id = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["link", "id"], name="proxy_queue_link_idx")]

    def __str__(self) -> str:
        return f"{self.action} #{self.pk}"


class UpstreamProfile(models.Model):
    """A backend's SetChargingProfile, kept here as a cap on the local allocation (never sent on)."""

    link = models.ForeignKey(UpstreamLink, on_delete=models.CASCADE, related_name="profiles")
    connector_id = models.PositiveIntegerField()
    charging_profile_id = models.IntegerField()
    purpose = models.CharField(max_length=30)
    stack_level = models.PositiveIntegerField()
    transaction_id = models.IntegerField(null=True, blank=True, help_text="Local transaction id (TxProfile).")
    awaiting_id_tag = models.CharField(
        max_length=20, blank=True,
        help_text="A profile from RemoteStartTransaction: waits for the transaction this badge starts.")
    profile = models.JSONField(help_text="csChargingProfiles as received (camelCase).")
    received_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["link", "connector_id"], name="proxy_profile_link_idx")]

    def __str__(self) -> str:
        return f"{self.purpose} {self.charging_profile_id} (connector {self.connector_id})"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.profile)
