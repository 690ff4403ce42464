"""The site as the installer describes it: zone tree, time-of-use rules, sharing policy;
plus what the control loop decided and sent (setpoint history, limits in force)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from chargers.models import Charger

# The appliance this replaces supports 20 zones in 4 levels; the engine is benchmarked far
# beyond (100 zones, 8 levels): these are the limits the admin enforces.
MAX_ZONE_DEPTH = 8
MAX_ZONES = 200


class AllocationMode(models.TextChoices):
    EQUAL = "equal", "Equal share"
    PRIORITY = "priority", "Priority (VIP first)"


class SheddingPolicy(models.TextChoices):
    ENERGY = "energy", "Pause who received the most energy first"
    CONNECTION_TIME = "connection_time", "Pause the longest connected first"


class SiteSettings(models.Model):
    """Site-wide load-management policy (one row; edited in the admin)."""

    allocation_mode = models.CharField(
        max_length=10, choices=AllocationMode.choices, default=AllocationMode.EQUAL,
        verbose_name="allocation mode",
        help_text="Equal: the same share for every session under the same constraint. Priority: VIP badges, VIP "
        "chargers and VIP sessions first, the others share what is left.",
    )
    shedding_policy = models.CharField(
        max_length=20, choices=SheddingPolicy.choices, default=SheddingPolicy.ENERGY,
        verbose_name="shedding policy",
        help_text="When not even the minimum current fits every session, which ones are paused first.",
    )
    rotation_period_s = models.PositiveIntegerField(
        default=900, validators=[MinValueValidator(60)], help_text="Paused sessions are reconsidered this often.",
        verbose_name="rotation period (s)",
    )
    loop_period_s = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(300)],
        help_text="How often the loop recomputes every limit; it also runs at once when a session starts or "
        "stops, or a lower limit comes into force.",
        verbose_name="control loop period (s)",
    )
    min_on_s = models.PositiveIntegerField(
        default=300, validators=[MaxValueValidator(3600)], help_text="A started session runs at least this long.",
        verbose_name="minimum on time (s)",
    )
    min_off_s = models.PositiveIntegerField(
        default=120, validators=[MaxValueValidator(3600)], help_text="A paused session stays paused this long.",
        verbose_name="minimum off time (s)",
    )
    hysteresis_a = models.FloatField(
        default=1.0, validators=[MinValueValidator(0.1), MaxValueValidator(10)],
        help_text="Send a new limit only when it moves this much, up or down (safety decreases always go).",
        verbose_name="hysteresis (A)",
    )
    unused_margin_a = models.FloatField(
        default=2.0, validators=[MinValueValidator(0), MaxValueValidator(32)],
        help_text="A car drawing less than offered is offered its draw plus this margin; the rest goes to "
        "the others.",
        verbose_name="margin above the measured draw (A)",
    )
    overdraw_tolerance_a = models.FloatField(
        default=2.0, validators=[MinValueValidator(0), MaxValueValidator(32)],
        help_text="How far a car may draw above its limit before the decision is flagged as overdraw.",
        verbose_name="overdraw tolerance (A)",
    )
    measurement_max_age_s = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(1)],
        help_text="Older meter readings are stale: dynamic zones fall back to their fallback limit.",
        verbose_name="measurement max age (s)",
    )
    car_response_s = models.FloatField(
        default=5.0, validators=[MinValueValidator(0), MaxValueValidator(120)],
        help_text="Seconds a car takes to follow a new limit: its draw counts for the measured-draw cap only "
        "from samples taken this long after the limit came into force.",
        verbose_name="car response (s)",
    )
    measurement_window_s = models.FloatField(
        default=2.0, validators=[MinValueValidator(0), MaxValueValidator(60)],
        help_text="How far a meter reading may lag (s): charger readings are combined with it only within "
        "this window before it, taking the lowest (so the building load is never under-estimated).",
        verbose_name="measurement window (s)",
    )
    answer_timeout_s = models.FloatField(
        default=10.0, validators=[MinValueValidator(1), MaxValueValidator(120)],
        help_text="A charging profile not answered within this time counts as unanswered (and stays counted "
        "at its value until a later answer settles it).",
        verbose_name="answer timeout (s)",
    )
    setpoint_retention_days = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1)],
        verbose_name="setpoint history retention (days)",
        help_text="Limit decisions (Setpoints) older than this are pruned.",
    )
    fallback_current_a = models.FloatField(
        default=10.0, validators=[MinValueValidator(0)],
        help_text="Per phase limit of a dynamic zone without a fallback of its own when its measurement is "
        "missing or stale. Conservative on purpose: never 'unlimited'.",
        verbose_name="site fallback current (A per phase)",
    )
    last_rotation_at = models.FloatField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = verbose_name_plural = "site settings"

    def __str__(self) -> str:
        return "Site settings"

    @classmethod
    def load(cls) -> SiteSettings:
        settings, _ = cls.objects.get_or_create(pk=1)
        return settings


PV_PHASES = [("123", "L1, L2, L3 (three-phase inverter)"), ("1", "L1 only"), ("2", "L2 only"), ("3", "L3 only")]


class ZoneMode(models.TextChoices):
    STATIC = "static", "Static (fixed limit)"
    DYNAMIC = "dynamic", "Dynamic (limit minus measured non-EV load)"


class Zone(models.Model):
    """A node of the electrical tree: the connection point (root), a board, a feeder."""

    name = models.CharField(
        max_length=60, unique=True,
        help_text="Shown on the dashboard, in the API and in the loop's reasons (zone:<name>).",
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children",
        help_text="The zone this one is fed from; empty for the connection point (a root).",
    )
    max_current_a = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="Per phase (breaker rating), amps.",
        verbose_name="maximum current (A per phase)",
    )
    max_power_kw = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="Total (subscribed demand), kW.",
        verbose_name="maximum power (kW)",
    )
    mode = models.CharField(
        max_length=10, choices=ZoneMode.choices, default=ZoneMode.STATIC,
        help_text="Static: EV charging gets the fixed limit. Dynamic: the limit minus the measured non-EV consumption "
        "(from a consumption meter or the BEMS).",
    )
    fallback_current_a = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="Per phase limit for EV charging when measurements are missing or stale (dynamic zones); "
        "empty = the site's fallback.",
        verbose_name="fallback current (A per phase)",
    )
    add_pv_production = models.BooleanField(
        default=False, help_text="Add measured PV production to the capacity.",
        verbose_name="add PV production",
    )
    pv_phases = models.CharField(
        max_length=3, choices=PV_PHASES, default="123",
        help_text="Phases the PV inverter feeds, used when the PV meter gives no per-phase currents: a 6.9 kW "
        "single-phase inverter adds 30 A on its phase, nothing on the others.",
        verbose_name="PV phases",
    )
    # Latest measurement of the zone's total consumption (meters or a BEMS write it).
    measured_current_l1_a = models.FloatField(
        null=True, blank=True,
        verbose_name="measured current L1 (A)",
        help_text="Latest total consumption on L1 (meters, BEMS, or entered here).",
    )
    measured_current_l2_a = models.FloatField(
        null=True, blank=True,
        verbose_name="measured current L2 (A)",
        help_text="Latest total consumption on L2 (meters, BEMS, or entered here).",
    )
    measured_current_l3_a = models.FloatField(
        null=True, blank=True,
        verbose_name="measured current L3 (A)",
        help_text="Latest total consumption on L3 (meters, BEMS, or entered here).",
    )
    measured_power_kw = models.FloatField(
        null=True, blank=True,
        verbose_name="measured power (kW)", help_text="Latest total consumption power (meters, BEMS, or entered here).",
    )
    measured_at = models.DateTimeField(
        null=True, blank=True, help_text="Time of the consumption reading.",
        verbose_name="measured at",
    )
    pv_power_kw = models.FloatField(
        null=True, blank=True,
        verbose_name="PV power (kW)", help_text="Latest PV production.",
    )
    pv_current_l1_a = models.FloatField(
        null=True, blank=True,
        verbose_name="PV current L1 (A)",
        help_text="Latest PV current on L1, when the PV meter gives currents per phase.",
    )
    pv_current_l2_a = models.FloatField(
        null=True, blank=True,
        verbose_name="PV current L2 (A)",
        help_text="Latest PV current on L2, when the PV meter gives currents per phase.",
    )
    pv_current_l3_a = models.FloatField(
        null=True, blank=True,
        verbose_name="PV current L3 (A)",
        help_text="Latest PV current on L3, when the PV meter gives currents per phase.",
    )
    # PV has its own timestamp: a live PV meter must never make a dead consumption meter look fresh.
    pv_measured_at = models.DateTimeField(
        null=True, blank=True, help_text="Time of the PV reading.",
        verbose_name="PV measured at",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def effective_fallback_a(self, site: SiteSettings) -> float:
        return site.fallback_current_a if self.fallback_current_a is None else self.fallback_current_a

    def depth(self) -> int:
        """Level in the tree (root = 1); raises ValidationError on a cycle."""
        seen: set[int | None] = {self.pk}
        level, node = 1, self.parent
        while node is not None:
            if node.pk in seen:
                raise ValidationError({"parent": "This parent would make a loop in the zone tree."})
            seen.add(node.pk)
            level, node = level + 1, node.parent
        return level

    def clean(self) -> None:
        if self.max_current_a is None and self.max_power_kw is None:
            raise ValidationError("Give the zone a maximum current per phase, a maximum power, or both.")
        if self.depth() > MAX_ZONE_DEPTH:
            raise ValidationError({"parent": f"The zone tree supports at most {MAX_ZONE_DEPTH} levels."})
        if self.pk is None and Zone.objects.count() >= MAX_ZONES:
            raise ValidationError(f"The site supports at most {MAX_ZONES} zones.")


class TimeOfUseRule(models.Model):
    """A reduced zone limit during given hours (peak tariff), e.g. Mon–Fri 17:00–20:00 at 50 %."""

    zone = models.ForeignKey(
        Zone, on_delete=models.CASCADE, related_name="time_of_use",
        help_text="The zone whose limit the rule lowers.",
    )
    label = models.CharField(max_length=40, default="peak", help_text="A name for the period (peak, night …).")
    weekdays = models.CharField(
        max_length=13, default="0,1,2,3,4", help_text="Comma-separated weekdays, 0 = Monday … 6 = Sunday."
    )
    start_time = models.TimeField(verbose_name="start", help_text="Site time (TIME_ZONE) the reduced limit starts.")
    end_time = models.TimeField(
        help_text="May be earlier than the start: the period then crosses midnight.",
        verbose_name="end",
    )
    limit_current_a = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0)],
        verbose_name="limit (A per phase)",
        help_text="Absolute current limit during the period (or give a percentage).",
    )
    limit_percent = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Percentage of the zone limit (current and power).",
        verbose_name="limit (%)",
    )

    class Meta:
        ordering = ["zone", "start_time"]
        verbose_name = "time-of-use rule"

    def __str__(self) -> str:
        return f"{self.zone}: {self.label} {self.start_time:%H:%M}-{self.end_time:%H:%M}"

    def weekday_set(self) -> frozenset[int]:
        return frozenset(int(day) for day in self.weekdays.split(",") if day.strip())

    def clean(self) -> None:
        try:
            days = self.weekday_set()
        except ValueError:
            raise ValidationError({"weekdays": "Use numbers 0 (Monday) to 6 (Sunday), separated by commas."}) from None
        if not days or not days <= set(range(7)):
            raise ValidationError({"weekdays": "Use numbers 0 (Monday) to 6 (Sunday), separated by commas."})
        if (self.limit_current_a is None) == (self.limit_percent is None):
            raise ValidationError("Give either an absolute current limit or a percentage, not both.")
        if self.start_time == self.end_time:
            raise ValidationError({"end_time": "The period is empty: start and end are equal."})


class LimitPurpose(models.TextChoices):
    TX_DEFAULT = "TxDefaultProfile", "Safe default (TxDefaultProfile, whole charger)"
    TX = "TxProfile", "Session limit (TxProfile)"


class AnswerStatus(models.TextChoices):
    """What became of the last profile sent: the charger's answer, or why there is none."""

    ACCEPTED = "Accepted", "Accepted"
    REJECTED = "Rejected", "Rejected by the charger"
    NOT_SUPPORTED = "NotSupported", "Not supported by the charger"
    CALL_ERROR = "CallError", "CALLERROR from the charger"
    NO_ANSWER = "NoAnswer", "No answer before the deadline"
    OFFLINE = "Offline", "Charger disconnected before answering"
    NOT_SENT = "NotSent", "Not sent (transaction ended or payload refused)"


class LimitState(models.Model):
    """The control loop's live state of one connector: limit in force, pending and wanted.

    One row per (charger, connector); connector 0 is the charger's TxDefaultProfile (the safe
    default every connector without a session profile obeys), connectors >= 1 hold the TxProfile
    of their running transaction. Limits are amps per phase on the worst phase, whatever unit was
    sent (a W-only charger's watts are converted at the phases its car may load).

    The loop plans with every connector at `held_a` = max(in force, every unanswered profile):
    a profile whose answer never came may have been applied, so it counts until a later answer
    settles it. Decisions (with their reasons) are also kept, append-only, in `Setpoint`.
    """

    charger = models.ForeignKey(
        Charger, on_delete=models.CASCADE, related_name="limit_states",
        help_text="The charger this limit is for.",
    )
    connector_id = models.PositiveIntegerField(
        verbose_name="connector",
        help_text="0: the charger's safe default (TxDefaultProfile); 1, 2 …: the session on that connector.",
    )
    purpose = models.CharField(
        max_length=20, choices=LimitPurpose.choices,
        help_text="Safe default of the whole charger, or the limit of a running session.",
    )
    transaction_id = models.BigIntegerField(
        null=True, blank=True, help_text="Our transaction id the TxProfile is for (empty for the default).",
        verbose_name="session",
    )
    rate_unit = models.CharField(
        max_length=1, default="A", help_text="Unit of the last profile sent: A or W.",
        verbose_name="rate unit",
    )
    # In force: the last profile the charger Accepted (for this transaction, on a TxProfile row).
    in_force_a = models.FloatField(
        null=True, blank=True, help_text="Limit in force (A per phase); empty: unknown.",
        verbose_name="in force (A)",
    )
    in_force_paused = models.BooleanField(
        default=False,
        verbose_name="paused in force", help_text="The charger accepted a pause (0 A).",
    )
    in_force_since = models.DateTimeField(
        null=True, blank=True,
        verbose_name="in force since", help_text="When the charger accepted the limit in force.",
    )
    raised_at = models.DateTimeField(
        null=True, blank=True, help_text="When a higher limit last came into force: a car's draw measured before "
        "it says what the car drew under a lower limit, not what it takes.",
        verbose_name="raised at",
    )
    # Pending: sent, not answered (or answered by nothing: timeout, disconnect).
    pending_a = models.FloatField(
        null=True, blank=True, help_text="Latest limit sent and not yet answered (A).",
        verbose_name="pending (A)",
    )
    pending_max_a = models.FloatField(
        null=True, blank=True, help_text="Highest limit sent since the last settled answer: counted until settled.",
        verbose_name="highest pending (A)",
    )
    unsettled_a = models.FloatField(
        null=True, blank=True, help_text="Highest limit sent whose outcome is unknown (no answer, disconnected).",
        verbose_name="unsettled (A)",
    )
    pending_paused = models.BooleanField(
        default=False,
        verbose_name="pause pending", help_text="The limit sent and not answered yet is a pause (0 A).",
    )
    pending_sent_at = models.DateTimeField(
        null=True, blank=True,
        verbose_name="pending since", help_text="When the pending limit was sent.",
    )
    pending_deadline = models.DateTimeField(
        null=True, blank=True,
        verbose_name="answer deadline", help_text="Without an answer by then, the pending limit counts as unanswered.",
    )
    sent_seq = models.PositiveIntegerField(
        default=0, help_text="Sequence number of the last profile sent.",
        verbose_name="send sequence",
    )
    # Wanted: what the allocation decided at the last tick, and why.
    wanted_a = models.FloatField(
        null=True, blank=True,
        verbose_name="wanted (A)", help_text="What the allocation decided at the last tick (A per phase).",
    )
    wanted_paused = models.BooleanField(
        default=False,
        verbose_name="pause wanted",
        help_text="The allocation decided to pause the session (shed, or held by the minimum off time).",
    )
    binding = models.CharField(
        max_length=120, blank=True, help_text="What limited the wanted value.",
        verbose_name="limited by",
    )
    waiting = models.CharField(
        max_length=160, blank=True, help_text="Why the wanted limit is not (yet) in force: the plan's reason.",
        verbose_name="why not in force",
    )
    # Engine state carried from tick to tick (pause/run flips, time spent running).
    state_since = models.FloatField(
        default=0.0, help_text="Epoch seconds of the last pause/run decision change.",
        verbose_name="decision changed at (epoch s)",
    )
    run_seconds = models.FloatField(
        default=0.0, help_text="Seconds this transaction ran (not paused) so far.",
        verbose_name="charging time (s)",
    )
    run_counted_at = models.FloatField(
        null=True, blank=True,
        verbose_name="charging time counted at (epoch s)", help_text="When the charging time was last added up.",
    )
    # Answers.
    last_status = models.CharField(
        max_length=20, choices=AnswerStatus.choices, blank=True,
        verbose_name="last answer",
        help_text="What became of the last profile sent: the charger's answer, or why there is none.",
    )
    last_detail = models.CharField(
        max_length=200, blank=True,
        verbose_name="answer detail", help_text="Detail of the last answer (CALLERROR description, refusal reason).",
    )
    last_answer_at = models.DateTimeField(
        null=True, blank=True,
        verbose_name="last answer at", help_text="When the last answer (or its absence) was recorded.",
    )
    failures = models.PositiveIntegerField(
        default=0, help_text="Unsuccessful sends in a row.",
        verbose_name="failures in a row",
    )
    retry_at = models.DateTimeField(
        null=True, blank=True, help_text="No new send before this time (backoff).",
        verbose_name="next retry",
    )
    updated_at = models.DateTimeField(auto_now=True, help_text="Last change of this row.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["charger", "connector_id"], name="one_limit_state_per_connector")
        ]
        verbose_name = "limit state"

    def __str__(self) -> str:
        return f"{self.charger}#{self.connector_id} in force {self.in_force_a} A, pending {self.pending_a} A"

    @property
    def held_a(self) -> float | None:
        """What the charger may be holding: max(in force, unanswered); None when nothing is known."""
        values = [v for v in (self.in_force_a, self.pending_max_a) if v is not None]
        return max(values) if values else None

    @property
    def has_pending(self) -> bool:
        return self.pending_max_a is not None


class Setpoint(models.Model):
    """Setpoint history: every decision of the control loop, sent or not, and why."""

    timestamp = models.DateTimeField(db_index=True, help_text="When the control loop decided.")
    charger = models.ForeignKey(
        Charger, on_delete=models.CASCADE, related_name="setpoints",
        help_text="The charger the limit is for.",
    )
    connector_id = models.PositiveIntegerField(
        verbose_name="connector", help_text="0: the charger's safe default; 1, 2 …: a session's connector.",
    )
    transaction_id = models.BigIntegerField(
        null=True, blank=True,
        verbose_name="session", help_text="Our transaction id the limit is for (empty for the safe default).",
    )
    limit_a = models.FloatField(verbose_name="limit (A per phase)", help_text="The limit decided (0 when paused).")
    paused = models.BooleanField(
        default=False,
        help_text="The session is paused (0 A): shed, or held by the minimum off time.",
    )
    binding = models.CharField(
        max_length=120, blank=True, help_text="What limited this session.",
        verbose_name="limited by",
    )
    overdraw = models.BooleanField(
        default=False,
        help_text="The car drew more than its limit plus the overdraw tolerance.",
    )
    sent = models.BooleanField(
        default=False,
        help_text="A profile went to the charger (changes smaller than the hysteresis are not sent).",
    )
    status = models.CharField(
        max_length=60, blank=True, help_text="The charger's answer, or why none.",
        verbose_name="answer",
    )

    class Meta:
        ordering = ["-timestamp", "-id"]

    def __str__(self) -> str:
        return f"{self.timestamp:%H:%M:%S} {self.charger}#{self.connector_id} {self.limit_a} A"
