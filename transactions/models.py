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

    charger = models.ForeignKey(
        Charger, on_delete=models.PROTECT, related_name="transactions",
        help_text="The charger the session ran on.",
    )
    connector_id = models.PositiveIntegerField(verbose_name="connector", help_text="Connector of the charger (1, 2 …).")
    id_tag = models.CharField(
        max_length=20, db_index=True,
        verbose_name="id tag", help_text="Badge id the charger sent in the StartTransaction.",
    )
    badge = models.ForeignKey(
        "badges.Badge", null=True, blank=True, on_delete=models.SET_NULL, related_name="transactions",
        help_text="The badge whose id tag started the session (matched ignoring case).",
    )
    id_tag_status = models.CharField(
        max_length=20, blank=True, help_text="What we answered to the StartTransaction.",
        verbose_name="authorization",
    )
    offline = models.BooleanField(
        default=False, help_text="Started while the charger was offline (the StartTransaction was replayed later).",
        verbose_name="started offline",
    )
    auth_status_at_start = models.CharField(
        max_length=20, blank=True, help_text="The badge's status at the start time (reviewed for offline starts).",
        verbose_name="badge status at start",
    )
    reservation_id = models.IntegerField(
        null=True, blank=True,
        verbose_name="reservation id", help_text="The reservation the session used, if any.",
    )
    meter_start_wh = models.BigIntegerField(
        null=True, blank=True,
        verbose_name="meter start (Wh)", help_text="The charger's energy register at the start.",
    )
    meter_stop_wh = models.BigIntegerField(
        null=True, blank=True,
        verbose_name="meter stop (Wh)", help_text="The charger's energy register at the stop.",
    )
    start_time = models.DateTimeField(
        null=True, blank=True, db_index=True,
        verbose_name="start", help_text="Start time, from the charger's StartTransaction.",
    )
    stop_time = models.DateTimeField(
        null=True, blank=True,
        verbose_name="stop", help_text="Stop time: the charger's, or the system's when it closed the session.",
    )
    stop_reason = models.CharField(
        max_length=60, blank=True,
        verbose_name="stop reason", help_text="The charger's reason (EVDisconnected, Local, Remote …) or the system's.",
    )
    stop_id_tag = models.CharField(
        max_length=20, blank=True,
        verbose_name="stop id tag", help_text="Badge that stopped the session, when the charger sent one.",
    )
    state = models.CharField(
        max_length=10, choices=TransactionState.choices, default=TransactionState.ACTIVE,
        help_text="Active, completed, or stopped with an unknown start (to review).",
    )
    vip = models.BooleanField(
        default=False, help_text="Served first in priority mode, whatever the badge or charger (set by an operator).",
        verbose_name="VIP session",
    )
    closed_by = models.CharField(
        max_length=10, choices=ClosedBy.choices, blank=True,
        verbose_name="closed by",
        help_text="The charger (StopTransaction), or the system (reboot, silence, new session on the connector).",
    )
    # Kept up to date from the meter values: energy so far (final once stopped), the latest
    # energy register reading, when the charger last reported on the session, peak power.
    energy_wh = models.BigIntegerField(
        null=True, blank=True,
        verbose_name="energy (Wh)", help_text="Energy delivered so far; final once stopped.",
    )
    last_meter_wh = models.BigIntegerField(
        null=True, blank=True,
        verbose_name="last meter reading (Wh)", help_text="Latest energy register value reported for the session.",
    )
    last_sample_at = models.DateTimeField(
        null=True, blank=True,
        verbose_name="last meter value at", help_text="When the charger last reported on the session.",
    )
    peak_power_w = models.FloatField(
        null=True, blank=True,
        verbose_name="peak power (W)", help_text="Highest power reported during the session.",
    )
    # The id the charger used, when it is not one we issued (UNMATCHED stops).
    charger_transaction_id = models.IntegerField(
        null=True, blank=True,
        verbose_name="charger's transaction id",
        help_text="The id the charger used, when it is not one the system issued (stop with an unknown start).",
    )
    created_at = models.DateTimeField(
        auto_now_add=True,
        verbose_name="recorded at", help_text="When the system recorded the start.",
    )
    updated_at = models.DateTimeField(auto_now=True, help_text="Last change of the record.")

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

    # No index of its own: the (charger, connector, timestamp) index below serves every lookup by
    # charger; one index fewer to update for each of the ~5,000 rows a second at 1,000 chargers.
    charger = models.ForeignKey(
        Charger, on_delete=models.CASCADE, related_name="meter_samples", db_index=False,
        help_text="The charger that reported the value.",
    )
    connector_id = models.PositiveIntegerField(
        verbose_name="connector", help_text="0: the charger's main meter; 1, 2 …: a connector.",
    )
    # Indexed with the timestamp (below), not alone: the control loop reads the last minute of
    # every running session's currents each tick, and with an index on the session alone the
    # databases visited each session's history for it (at 1,000 sessions with up to two hours
    # of samples 30 s apart, the tick's reading took 228 ms on SQLite, 114 with the pair; on
    # PostgreSQL 264 and 72). The pair serves every lookup by session as well, for the same
    # number of indexes to update per sample (README, "Meter sample retention": the disk cost).
    transaction = models.ForeignKey(
        Transaction, null=True, blank=True, on_delete=models.CASCADE, related_name="meter_samples",
        verbose_name="session", help_text="The session the value belongs to, when the charger named one.",
        db_index=False,
    )
    timestamp = models.DateTimeField(db_index=True, help_text="The charger's time of the measurement.")
    measurand = models.CharField(
        max_length=50, default="Energy.Active.Import.Register",
        help_text="What is measured (OCPP measurand): Energy.Active.Import.Register, Power.Active.Import, "
        "Current.Import …",
    )
    phase = models.CharField(max_length=8, blank=True, help_text="L1, L2, L3, N, L1-N … when the value is per phase.")
    unit = models.CharField(max_length=10, blank=True, help_text="Unit as sent: Wh, kWh, W, kW, A, V …")
    context = models.CharField(
        max_length=30, blank=True,
        help_text="Why the value was sent: Sample.Periodic, Transaction.Begin, Transaction.End …",
    )
    location = models.CharField(
        max_length=10, blank=True,
        help_text="Where it was measured: Outlet, Inlet, Body, Cable, EV.",
    )
    value = models.FloatField(null=True, blank=True, help_text="Numeric value, when the raw value is one.")
    raw_value = models.TextField(blank=True, verbose_name="raw value", help_text="The value exactly as sent.")

    class Meta:
        ordering = ["timestamp", "id"]
        indexes = [models.Index(fields=["charger", "connector_id", "timestamp"]),
                   models.Index(fields=["transaction", "timestamp"])]

    def __str__(self) -> str:
        return f"{self.timestamp} {self.measurand} {self.raw_value}{self.unit}"


class MeterSampleMinute(models.Model):
    """One minute of one series (measurand, phase, unit) of a connector's meter samples.

    Raw MeterSample rows are kept METER_SAMPLES_RAW_DAYS days, then folded into these rows
    by the beat task `transactions-compact-samples` (transactions.services.meter_samples_compact).
    """

    charger = models.ForeignKey(Charger, on_delete=models.CASCADE, related_name="meter_sample_minutes")
    connector_id = models.PositiveIntegerField()
    transaction = models.ForeignKey(
        Transaction, null=True, blank=True, on_delete=models.CASCADE, related_name="meter_sample_minutes"
    )
    minute = models.DateTimeField(help_text="Start of the minute (UTC).")
    measurand = models.CharField(max_length=50)
    phase = models.CharField(max_length=8, blank=True)
    unit = models.CharField(max_length=10, blank=True)
    samples = models.PositiveIntegerField(help_text="Raw samples folded into this row.")
    value_min = models.FloatField(null=True, blank=True)
    value_max = models.FloatField(null=True, blank=True)
    value_avg = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["minute", "id"]
        indexes = [models.Index(fields=["charger", "connector_id", "minute"]),
                   models.Index(fields=["transaction", "minute"])]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.measurand} avg {self.value_avg}{self.unit}"
