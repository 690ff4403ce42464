"""Charge points as the central system knows them: identity, registration, connection."""

from __future__ import annotations

from django.contrib.auth.hashers import check_password, make_password
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower


class RegistrationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"


class Charger(models.Model):
    """One OCPP charge point, identified by the last segment of its websocket URL."""

    charge_point_id = models.CharField(
        max_length=48, unique=True,
        verbose_name="charge point id",
        help_text="The last segment of the charger's websocket URL (ws://…/ocpp/<id>); letter case does not matter.",
    )
    vendor = models.CharField(max_length=20, blank=True, help_text="Reported by the charger in its BootNotification.")
    model = models.CharField(max_length=20, blank=True, help_text="Reported by the charger in its BootNotification.")
    serial_number = models.CharField(
        max_length=25, blank=True,
        verbose_name="charge point serial number", help_text="Reported by the charger in its BootNotification.",
    )
    charge_box_serial_number = models.CharField(
        max_length=25, blank=True,
        verbose_name="charge box serial number", help_text="Reported by the charger in its BootNotification.",
    )
    firmware_version = models.CharField(
        max_length=50, blank=True,
        help_text="Reported by the charger in its BootNotification.",
    )
    meter_type = models.CharField(
        max_length=25, blank=True,
        help_text="The charger's own meter, as reported in its BootNotification.",
    )
    meter_serial_number = models.CharField(
        max_length=25, blank=True,
        help_text="The charger's own meter, as reported in its BootNotification.",
    )
    iccid = models.CharField(
        max_length=20, blank=True,
        verbose_name="ICCID", help_text="SIM card of the charger's modem, as reported in its BootNotification.",
    )
    imsi = models.CharField(
        max_length=20, blank=True,
        verbose_name="IMSI",
        help_text="Subscriber identity of the charger's modem, as reported in its BootNotification.",
    )
    registration_status = models.CharField(
        max_length=10, choices=RegistrationStatus.choices, default=RegistrationStatus.PENDING,
        verbose_name="registration",
        help_text="Pending and rejected chargers may connect, but only their BootNotification is answered: accept a "
        "charger to serve it.",
    )
    connected = models.BooleanField(
        default=False,
        verbose_name="connected now",
        help_text="A websocket from this charger is open (a charger silent for several heartbeat intervals is marked "
        "offline).",
    )
    # Channel-layer name of the consumer holding the websocket: where server-initiated
    # calls are sent, and how a stale consumer knows it was replaced.
    channel_name = models.CharField(max_length=200, blank=True, editable=False)
    connected_at = models.DateTimeField(
        null=True, blank=True,
        verbose_name="connected since", help_text="When the current (or last) websocket opened.",
    )
    last_seen = models.DateTimeField(
        null=True, blank=True,
        verbose_name="last heard from", help_text="Last message of any kind from the charger.",
    )
    last_boot_at = models.DateTimeField(
        null=True, blank=True,
        verbose_name="last boot", help_text="Time of the last BootNotification.",
    )
    heartbeat_interval_s = models.PositiveIntegerField(
        default=300,
        verbose_name="heartbeat interval (s)",
        help_text="Given to the charger in the BootNotification answer; a charger silent for several intervals is "
        "shown offline.",
    )
    password_hash = models.CharField(
        max_length=200, blank=True, help_text="HTTP Basic password (security profile 1), stored hashed.",
        verbose_name="password (hashed)",
    )
    rated_max_current_a = models.FloatField(
        default=32.0, validators=[MinValueValidator(6.0), MaxValueValidator(100.0)],
        help_text="Highest current the charger can deliver, per phase (A).",
        verbose_name="rated current (A per phase)",
    )
    phases = models.PositiveSmallIntegerField(
        choices=[(1, "1 phase"), (3, "3 phases")], default=3,
        help_text="Phases the charger is wired to: 3, or 1 (then set the supply phase).",
    )
    # Load management: where the charger hangs in the site tree and how it may be driven.
    zone = models.ForeignKey(
        "loadmgmt.Zone", null=True, blank=True, on_delete=models.PROTECT, related_name="chargers",
        help_text="Zone of the site tree that feeds this charger. Empty: the root zone (when the site has exactly "
        "one); with no zones at all, chargers share the site fallback current; with several roots, a charger "
        "without a zone is not allowed to charge until you pick one.",
    )
    supply_phase = models.PositiveSmallIntegerField(
        choices=[(1, "L1"), (2, "L2"), (3, "L3")], default=1,
        help_text="For a single-phase charger: the supply phase it is wired to.",
        verbose_name="supply phase",
    )
    min_current_a = models.FloatField(
        default=6.0, validators=[MinValueValidator(6.0), MaxValueValidator(32.0)],
        help_text="Lowest current the charger may signal, per phase (A; IEC 61851-1: 6 A).",
        verbose_name="minimum current (A per phase)",
    )
    vip = models.BooleanField(
        default=False, help_text="Sessions on this charger are served first in priority mode.",
        verbose_name="VIP charger",
    )
    diagnostics_status = models.CharField(
        max_length=20, blank=True,
        verbose_name="diagnostics upload",
        help_text="Last DiagnosticsStatusNotification (progress of a GetDiagnostics).",
    )
    firmware_status = models.CharField(
        max_length=30, blank=True,
        verbose_name="firmware update", help_text="Last FirmwareStatusNotification (progress of an UpdateFirmware).",
    )
    notes = models.TextField(
        blank=True,
        help_text="Free text for installers and operators: location, wiring, contacts.",
    )
    created_at = models.DateTimeField(
        auto_now_add=True,
        verbose_name="registered at",
        help_text="When the charger was created (in the admin, or at its first connection).",
    )

    class Meta:
        ordering = ["charge_point_id"]
        # A charger connects under its id in any letter case: a new fleet's handshakes look up
        # the ids they did not find as spelled by this index, not a table scan each.
        indexes = [models.Index(Lower("charge_point_id"), name="charger_cp_id_lower")]

    def __str__(self) -> str:
        return self.charge_point_id

    def clean(self) -> None:
        if (self.min_current_a is not None and self.rated_max_current_a is not None
                and self.min_current_a > self.rated_max_current_a):
            raise ValidationError({"min_current_a": "The minimum current cannot exceed the charger's rated maximum."})

    def set_password(self, raw_password: str | None) -> None:
        self.password_hash = make_password(raw_password) if raw_password else ""

    def check_password(self, raw_password: str) -> bool:
        return bool(self.password_hash) and check_password(raw_password, self.password_hash)

    @property
    def supply_phases(self) -> tuple[int, ...]:
        """Supply phases loaded (0 = L1): all three, or the one a single-phase unit is wired to."""
        return (0, 1, 2) if self.phases == 3 else (self.supply_phase - 1,)

    @property
    def is_accepted(self) -> bool:
        return self.registration_status == RegistrationStatus.ACCEPTED


class Connector(models.Model):
    """A connector of a charger (0 = the charger as a whole, as OCPP reports it)."""

    charger = models.ForeignKey(
        Charger, on_delete=models.CASCADE, related_name="connectors",
        help_text="The charger the connector belongs to.",
    )
    connector_id = models.PositiveIntegerField(
        verbose_name="connector", help_text="0 is the charger as a whole; 1, 2 … its sockets.",
    )
    status = models.CharField(
        max_length=20, blank=True,
        help_text="Last status the charger reported (StatusNotification): Available, Preparing, Charging, "
        "SuspendedEV, Faulted …",
    )
    error_code = models.CharField(
        max_length=30, blank=True,
        verbose_name="error code", help_text="OCPP error code of the last StatusNotification (NoError when none).",
    )
    info = models.CharField(max_length=50, blank=True, help_text="Free text the charger sent with the status.")
    vendor_id = models.CharField(
        max_length=255, blank=True,
        verbose_name="vendor id", help_text="Manufacturer the vendor error code belongs to.",
    )
    vendor_error_code = models.CharField(max_length=50, blank=True, help_text="The manufacturer's own error code.")
    status_at = models.DateTimeField(
        null=True, blank=True,
        verbose_name="status since", help_text="Time of the last StatusNotification.",
    )

    class Meta:
        ordering = ["charger", "connector_id"]
        constraints = [
            models.UniqueConstraint(fields=["charger", "connector_id"], name="unique_connector_per_charger")
        ]

    def __str__(self) -> str:
        return f"{self.charger.charge_point_id}#{self.connector_id}"


class ConfigurationKey(models.Model):
    """A configuration key of one charger: its value and what became of our last change."""

    charger = models.ForeignKey(
        Charger, on_delete=models.CASCADE, related_name="configuration",
        help_text="The charger the key was read from.",
    )
    key = models.CharField(max_length=50, help_text="OCPP configuration key (e.g. HeartbeatInterval).")
    value = models.CharField(
        max_length=500, blank=True,
        help_text="Value read with GetConfiguration, or set with ChangeConfiguration.",
    )
    readonly = models.BooleanField(
        default=False,
        verbose_name="read-only", help_text="The charger says this key cannot be changed.",
    )
    last_change_status = models.CharField(
        max_length=30, blank=True,
        verbose_name="last change",
        help_text="The charger's answer to the last ChangeConfiguration of this key: Accepted, RebootRequired, "
        "Rejected or NotSupported.",
    )
    updated_at = models.DateTimeField(auto_now=True, help_text="Last read or change of the key.")

    class Meta:
        ordering = ["charger", "key"]
        constraints = [models.UniqueConstraint(fields=["charger", "key"], name="unique_key_per_charger")]

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


class AutoConfigurationKey(models.Model):
    """A key the system sets on every charger when it is accepted and after each boot."""

    key = models.CharField(
        max_length=50, unique=True,
        help_text="OCPP configuration key set on every charger when it is accepted and after each boot.",
    )
    value = models.CharField(max_length=500, help_text="Value sent with ChangeConfiguration.")
    enabled = models.BooleanField(default=True, help_text="Unticked: kept here, not sent.")
    description = models.CharField(max_length=200, blank=True, help_text="Why the key is set (for the installer).")

    class Meta:
        ordering = ["key"]
        verbose_name = "automatic configuration key"

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


class Direction(models.TextChoices):
    IN = "in", "Charger → system"
    OUT = "out", "System → charger"
    EVENT = "event", "Event"


class OcppMessage(models.Model):
    """Maintenance log of OCPP traffic and connection events (bounded by a retention task)."""

    timestamp = models.DateTimeField(
        db_index=True,
        help_text="When the frame was received or sent, or the event happened.",
    )
    # Not indexed: every frame writes a row (two per MeterValues) and each index is a random
    # B-tree insertion (with it, a row cost 46–52 µs of SQLite CPU at 200,000 rows, 25–32 µs
    # without). Its readers filter case-insensitively (no index serves that) or by time first.
    charge_point_id = models.CharField(
        max_length=48,
        verbose_name="charge point id", help_text="As the charger connected, even when unknown to the system.",
    )
    charger = models.ForeignKey(
        Charger, null=True, blank=True, on_delete=models.SET_NULL,
        help_text="Empty when the charge point id is not (or no longer) registered.",
    )
    direction = models.CharField(
        max_length=5, choices=Direction.choices,
        help_text="Charger → system, system → charger, or a connection event.",
    )
    message_type = models.CharField(
        max_length=12, blank=True,
        help_text="CALL, CALLRESULT, CALLERROR, or the kind of event.",
    )
    unique_id = models.CharField(
        max_length=36, blank=True,
        verbose_name="message id", help_text="OCPP message id: an answer carries the id of the CALL it answers.",
    )
    action = models.CharField(
        max_length=50, blank=True,
        help_text="OCPP action (BootNotification, MeterValues …); empty on answers.",
    )
    payload = models.JSONField(
        null=True, blank=True,
        help_text="The message body; payloads over 8,000 characters are stored as their beginning and size.",
    )
    error = models.TextField(blank=True, help_text="CALLERROR code and description, or why the frame was refused.")

    class Meta:
        ordering = ["-timestamp", "-id"]
        verbose_name = "OCPP message"

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.charge_point_id} {self.direction} {self.action}"
