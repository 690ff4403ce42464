"""Charge points as the central system knows them: identity, registration, connection."""

from __future__ import annotations

from django.contrib.auth.hashers import check_password, make_password
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class RegistrationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"


class Charger(models.Model):
    """One OCPP charge point, identified by the last segment of its websocket URL."""

    charge_point_id = models.CharField(max_length=48, unique=True)
    vendor = models.CharField(max_length=20, blank=True)
    model = models.CharField(max_length=20, blank=True)
    serial_number = models.CharField(max_length=25, blank=True)
    charge_box_serial_number = models.CharField(max_length=25, blank=True)
    firmware_version = models.CharField(max_length=50, blank=True)
    meter_type = models.CharField(max_length=25, blank=True)
    meter_serial_number = models.CharField(max_length=25, blank=True)
    iccid = models.CharField(max_length=20, blank=True)
    imsi = models.CharField(max_length=20, blank=True)
    registration_status = models.CharField(
        max_length=10, choices=RegistrationStatus.choices, default=RegistrationStatus.PENDING
    )
    connected = models.BooleanField(default=False)
    # Channel-layer name of the consumer holding the websocket: where server-initiated
    # calls are sent, and how a stale consumer knows it was replaced.
    channel_name = models.CharField(max_length=200, blank=True, editable=False)
    connected_at = models.DateTimeField(null=True, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    last_boot_at = models.DateTimeField(null=True, blank=True)
    heartbeat_interval_s = models.PositiveIntegerField(default=300)
    password_hash = models.CharField(
        max_length=200, blank=True, help_text="HTTP Basic password (security profile 1), stored hashed."
    )
    rated_max_current_a = models.FloatField(
        default=32.0, validators=[MinValueValidator(6.0), MaxValueValidator(100.0)],
        help_text="Highest current the charger can deliver, per phase (A).",
    )
    phases = models.PositiveSmallIntegerField(choices=[(1, "1 phase"), (3, "3 phases")], default=3)
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
    )
    min_current_a = models.FloatField(
        default=6.0, validators=[MinValueValidator(6.0), MaxValueValidator(32.0)],
        help_text="Lowest current the charger may signal, per phase (A; IEC 61851-1: 6 A).",
    )
    vip = models.BooleanField(default=False, help_text="Sessions on this charger are served first in priority mode.")
    diagnostics_status = models.CharField(max_length=20, blank=True)
    firmware_status = models.CharField(max_length=30, blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["charge_point_id"]

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

    charger = models.ForeignKey(Charger, on_delete=models.CASCADE, related_name="connectors")
    connector_id = models.PositiveIntegerField()
    status = models.CharField(max_length=20, blank=True)
    error_code = models.CharField(max_length=30, blank=True)
    info = models.CharField(max_length=50, blank=True)
    vendor_id = models.CharField(max_length=255, blank=True)
    vendor_error_code = models.CharField(max_length=50, blank=True)
    status_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["charger", "connector_id"]
        constraints = [
            models.UniqueConstraint(fields=["charger", "connector_id"], name="unique_connector_per_charger")
        ]

    def __str__(self) -> str:
        return f"{self.charger.charge_point_id}#{self.connector_id}"


class ConfigurationKey(models.Model):
    """A configuration key of one charger: its value and what became of our last change."""

    charger = models.ForeignKey(Charger, on_delete=models.CASCADE, related_name="configuration")
    key = models.CharField(max_length=50)
    value = models.CharField(max_length=500, blank=True)
    readonly = models.BooleanField(default=False)
    last_change_status = models.CharField(max_length=30, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["charger", "key"]
        constraints = [models.UniqueConstraint(fields=["charger", "key"], name="unique_key_per_charger")]

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


class AutoConfigurationKey(models.Model):
    """A key the system sets on every charger when it is accepted and after each boot."""

    key = models.CharField(max_length=50, unique=True)
    value = models.CharField(max_length=500)
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True)

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

    timestamp = models.DateTimeField(db_index=True)
    charge_point_id = models.CharField(max_length=48, db_index=True)
    charger = models.ForeignKey(Charger, null=True, blank=True, on_delete=models.SET_NULL)
    direction = models.CharField(max_length=5, choices=Direction.choices)
    message_type = models.CharField(max_length=12, blank=True)
    unique_id = models.CharField(max_length=36, blank=True)
    action = models.CharField(max_length=50, blank=True)
    payload = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-timestamp", "-id"]
        verbose_name = "OCPP message"

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.charge_point_id} {self.direction} {self.action}"
