"""Charging sessions and the meter samples chargers report for them."""

from __future__ import annotations

from django.db import models

from chargers.models import Charger


class TransactionState(models.TextChoices):
    ACTIVE = "active", "Active"
    COMPLETED = "completed", "Completed"
    # A StopTransaction for an id we never issued (e.g. replayed after data loss):
    # recorded so that the energy is not lost, flagged so that it is reviewed.
    UNMATCHED = "unmatched", "Stopped, start unknown"


class Transaction(models.Model):
    """One charging session. Its primary key is the OCPP transactionId we issue."""

    charger = models.ForeignKey(Charger, on_delete=models.PROTECT, related_name="transactions")
    connector_id = models.PositiveIntegerField()
    id_tag = models.CharField(max_length=20, db_index=True)
    id_tag_status = models.CharField(max_length=20, blank=True)
    reservation_id = models.IntegerField(null=True, blank=True)
    meter_start_wh = models.BigIntegerField(null=True, blank=True)
    meter_stop_wh = models.BigIntegerField(null=True, blank=True)
    start_time = models.DateTimeField(null=True, blank=True, db_index=True)
    stop_time = models.DateTimeField(null=True, blank=True)
    stop_reason = models.CharField(max_length=30, blank=True)
    stop_id_tag = models.CharField(max_length=20, blank=True)
    state = models.CharField(max_length=10, choices=TransactionState.choices, default=TransactionState.ACTIVE)
    # The id the charger used, when it is not one we issued (UNMATCHED stops).
    charger_transaction_id = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-start_time", "-id"]
        indexes = [models.Index(fields=["charger", "state"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.charger} c{self.connector_id} {self.id_tag}"

    @property
    def energy_wh(self) -> int | None:
        if self.meter_start_wh is None or self.meter_stop_wh is None:
            return None
        return self.meter_stop_wh - self.meter_start_wh


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
