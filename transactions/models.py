"""Charging sessions and the meter samples chargers report for them."""

from __future__ import annotations

import datetime as dt

from django.db import models

from chargers.models import Charger


class TransactionState(models.TextChoices):
    ACTIVE = "active", "Active"
    COMPLETED = "completed", "Completed"
    # A StopTransaction for an id we never issued (e.g. replayed after data loss):
    # recorded so that the energy is not lost, flagged so that it is reviewed.
    UNMATCHED = "unmatched", "Stopped, start unknown"


class ClosedBy(models.TextChoices):
    CHARGER = "charger", "Charger (StopTransaction)"
    # The charger rebooted, went silent or started another session on the connector
    # without ever stopping this one: closed by the system so that nothing stays open forever.
    SYSTEM = "system", "System (no StopTransaction)"


class Transaction(models.Model):
    """One charging session. Its primary key is the OCPP transactionId we issue."""

    charger = models.ForeignKey(Charger, on_delete=models.PROTECT, related_name="transactions")
    connector_id = models.PositiveIntegerField()
    id_tag = models.CharField(max_length=20, db_index=True)
    badge = models.ForeignKey(
        "badges.Badge", null=True, blank=True, on_delete=models.SET_NULL, related_name="transactions",
        help_text="The badge whose id tag started the session (matched ignoring case).",
    )
    id_tag_status = models.CharField(max_length=20, blank=True, help_text="What we answered to the StartTransaction.")
    offline = models.BooleanField(
        default=False, help_text="Started while the charger was offline (the StartTransaction was replayed later)."
    )
    auth_status_at_start = models.CharField(
        max_length=20, blank=True, help_text="The badge's status at the start time (reviewed for offline starts)."
    )
    reservation_id = models.IntegerField(null=True, blank=True)
    meter_start_wh = models.BigIntegerField(null=True, blank=True)
    meter_stop_wh = models.BigIntegerField(null=True, blank=True)
    start_time = models.DateTimeField(null=True, blank=True, db_index=True)
    stop_time = models.DateTimeField(null=True, blank=True)
    stop_reason = models.CharField(max_length=60, blank=True)
    stop_id_tag = models.CharField(max_length=20, blank=True)
    state = models.CharField(max_length=10, choices=TransactionState.choices, default=TransactionState.ACTIVE)
    vip = models.BooleanField(
        default=False, help_text="Served first in priority mode, whatever the badge or charger (set by an operator)."
    )
    closed_by = models.CharField(max_length=10, choices=ClosedBy.choices, blank=True)
    # Kept up to date from the meter values: energy so far (final once stopped), the latest
    # energy register reading, when the charger last reported on the session, peak power.
    energy_wh = models.BigIntegerField(null=True, blank=True)
    last_meter_wh = models.BigIntegerField(null=True, blank=True)
    last_sample_at = models.DateTimeField(null=True, blank=True)
    peak_power_w = models.FloatField(null=True, blank=True)
    # The id the charger used, when it is not one we issued (UNMATCHED stops).
    charger_transaction_id = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-start_time", "-id"]
        indexes = [models.Index(fields=["charger", "state"]), models.Index(fields=["state", "badge"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.charger} c{self.connector_id} {self.id_tag}"

    @property
    def duration(self) -> dt.timedelta | None:
        if self.start_time is None or self.stop_time is None:
            return None
        return max(self.stop_time - self.start_time, dt.timedelta(0))

    @property
    def average_power_w(self) -> float | None:
        duration = self.duration
        if self.energy_wh is None or duration is None or duration.total_seconds() <= 0:
            return None
        return self.energy_wh * 3600 / duration.total_seconds()


class MeterSample(models.Model):
    """One sampledValue of a MeterValues (or StopTransaction transactionData) message."""

    charger = models.ForeignKey(Charger, on_delete=models.CASCADE, related_name="meter_samples")
    connector_id = models.PositiveIntegerField()
    transaction = models.ForeignKey(
        Transaction, null=True, blank=True, on_delete=models.CASCADE, related_name="meter_samples"
    )
    timestamp = models.DateTimeField(db_index=True)
    measurand = models.CharField(max_length=50, default="Energy.Active.Import.Register")
    phase = models.CharField(max_length=8, blank=True)
    unit = models.CharField(max_length=10, blank=True)
    context = models.CharField(max_length=30, blank=True)
    location = models.CharField(max_length=10, blank=True)
    value = models.FloatField(null=True, blank=True, help_text="Numeric value, when the raw value is one.")
    raw_value = models.TextField(blank=True)

    class Meta:
        ordering = ["timestamp", "id"]
        indexes = [models.Index(fields=["charger", "connector_id", "timestamp"])]

    def __str__(self) -> str:
        return f"{self.timestamp} {self.measurand} {self.raw_value}{self.unit}"
