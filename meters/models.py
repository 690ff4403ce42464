"""Meters the controller polls over Modbus, their latest reading, and their 1-minute history.

Where the latest reading lives: on the ``Meter`` row itself (``last_values``, ``last_reading_at``),
not in Redis, because
- the control loop reads zones and sessions from the database at every tick anyway; what it needs
  from meters reaches it as the zone's ``measured_*`` fields (written by the poller through
  ``loadmgmt.services.zone_record_measurement``) plus, for EV sub-meters, one indexed query over a
  few dozen meter rows (``meters.selectors.ev_submeter_currents``): well under a millisecond;
- the zone measurement and the meter status that explains it are committed in one transaction, so
  the loop never sees one without the other, and a restarted (embedded) Redis cannot make a lost
  meter look fresh or a fresh one look lost;
- the operator sees exactly what the loop sees in the admin.
The poller writes only status columns (``QuerySet.update``) and the admin saves only configuration
columns, so an operator's edit never rolls a reading back.

History is kept as 1-minute averages (``MeterReading``), accumulated on the meter row while the
minute runs (``history_*`` columns); raw readings are not kept, only the latest.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from loadmgmt.models import Zone
from meters import registers
from meters.registers import METER_TYPES, RegisterMap, build_generic_map

if TYPE_CHECKING:
    from meters.modbus import MeterConfig

GENERIC = "generic"
PHASE_CURRENTS = (registers.CURRENT_L1_A, registers.CURRENT_L2_A, registers.CURRENT_L3_A)
#: Cumulative counters: a minute's history keeps the highest value, not an average.
COUNTERS = frozenset({registers.ENERGY_IMPORT_WH, registers.ENERGY_EXPORT_WH})
#: Grace on the poll period: a beat tick arriving a little early still polls a due meter.
DUE_SLACK_S = 0.5


def meter_type_choices() -> list[tuple[str, str]]:
    """Built-in register maps plus the generic one (a callable: new maps need no migration)."""
    builtin = [(key, table.label) for key, table in sorted(METER_TYPES.items())]
    return [*builtin, (GENERIC, "Generic Modbus meter (register list below)")]


class Transport(models.TextChoices):
    TCP = "tcp", "Modbus TCP"
    RTU_OVER_TCP = "rtu_over_tcp", "Modbus RTU over TCP (gateway)"
    RTU_SERIAL = "rtu_serial", "Modbus RTU on a serial line (RS-485)"


class Parity(models.TextChoices):
    NONE = "N", "None"
    EVEN = "E", "Even"
    ODD = "O", "Odd"


class WordOrder(models.TextChoices):
    BIG = "big", "Big (high word first)"
    LITTLE = "little", "Little (low word first)"


class MeterRole(models.TextChoices):
    ZONE_TOTAL = "zone_total", "Zone total consumption"
    PV = "pv", "PV production"
    EV_SUBMETER = "ev_submeter", "EV sub-meter (charging load inside the zone)"
    MONITOR = "monitor", "Monitoring only"


#: What each role feeds to load management; a reading lacking one of these (that the meter's
#: map provides) is not used, so a half-read meter never passes for a fresh measurement.
ROLE_QUANTITIES: dict[str, tuple[str, ...]] = {
    MeterRole.ZONE_TOTAL: (*PHASE_CURRENTS, registers.POWER_W),
    MeterRole.PV: (registers.POWER_W,),
    MeterRole.EV_SUBMETER: PHASE_CURRENTS,
    MeterRole.MONITOR: (),
}


class Meter(models.Model):
    """One Modbus device (or one PowerTag behind a gateway) and what it measures for the site."""

    name = models.CharField(max_length=60, unique=True, help_text="Shown in lists, messages and on the dashboard.")
    meter_type = models.CharField(
        max_length=30, choices=meter_type_choices, default="iem3x5x",
        verbose_name="meter type", help_text="Register map: a Schneider device, or generic (your own map below).",
    )
    register_spec = models.JSONField(
        default=dict, blank=True,
        help_text='Generic type only: {"power_w": {"register": 3060, "data_type": "float32", "scale": 1000}, …}. '
                  "Quantities: " + ", ".join(registers.QUANTITIES) + ". Fields: address (wire, 0-based) or "
                  "register (documented, 1-based), data_type, scale, word_order, function_code (3/4), unit.",
        verbose_name="register map (generic type)",
    )
    word_order = models.CharField(
        max_length=6, choices=WordOrder.choices, blank=True,
        help_text="Override the map's word order (some gateways swap words). Empty: the map's own.",
        verbose_name="word order",
    )
    transport = models.CharField(
        max_length=12, choices=Transport.choices, default=Transport.TCP,
        help_text="Modbus TCP, Modbus RTU over a TCP gateway, or RTU on a serial port.",
    )
    host = models.CharField(max_length=255, blank=True, help_text="IP address or name (TCP transports).")
    port = models.PositiveIntegerField(
        default=502, validators=[MinValueValidator(1), MaxValueValidator(65535)],
        verbose_name="TCP port", help_text="502 for Modbus TCP; the gateway's port for RTU over TCP.",
    )
    serial_device = models.CharField(
        max_length=255, blank=True, help_text="e.g. /dev/ttyUSB0 (serial only).",
        verbose_name="serial device",
    )
    baudrate = models.PositiveIntegerField(
        default=19200,
        verbose_name="baud rate (bit/s)", help_text="Serial transport only.",
    )
    parity = models.CharField(
        max_length=1, choices=Parity.choices, default=Parity.EVEN,
        help_text="Serial transport only.",
    )
    stopbits = models.PositiveSmallIntegerField(
        default=1, choices=[(1, "1"), (2, "2")],
        verbose_name="stop bits", help_text="Serial transport only.",
    )
    unit_id = models.PositiveSmallIntegerField(
        default=1, validators=[MaxValueValidator(255)], help_text="Modbus slave / unit id (PowerTag: the tag's id).",
        verbose_name="unit id",
    )
    timeout_s = models.FloatField(
        default=2.0, validators=[MinValueValidator(0.1), MaxValueValidator(30)],
        verbose_name="timeout (s)", help_text="How long to wait for each answer before the read counts as failed.",
    )
    poll_period_s = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(3600)], help_text="Read the meter this often.",
        verbose_name="poll period (s)",
    )
    enabled = models.BooleanField(default=True, help_text="Unticked: not polled, never used.")
    role = models.CharField(
        max_length=12, choices=MeterRole.choices, default=MeterRole.MONITOR,
        help_text="What the readings are for: a zone's total consumption (dynamic zones), PV production, an EV "
        "sub-meter (the EV load inside a zone), or monitoring only.",
    )
    zone = models.ForeignKey(
        Zone, null=True, blank=True, on_delete=models.PROTECT, related_name="meters",
        help_text="The zone this meter measures (required unless monitoring only).",
    )
    history_retention_days = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(3650)],
        help_text="Keep 1-minute averages this many days.",
        verbose_name="history retention (days)",
    )
    # Status, written by the poller only.
    last_poll_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        verbose_name="last poll", help_text="Last attempt to read the meter.",
    )
    last_reading_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        verbose_name="last reading", help_text="Last successful read.",
    )
    last_values = models.JSONField(
        default=dict, blank=True, editable=False,
        verbose_name="last values", help_text="The values of the last successful read.",
    )
    last_error = models.TextField(
        blank=True, editable=False,
        verbose_name="last error",
        help_text="Why the last failed read failed: timeout, Modbus exception, garbage value.",
    )
    last_error_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        verbose_name="last error at", help_text="Time of the last failed read.",
    )
    consecutive_failures = models.PositiveIntegerField(
        default=0, editable=False,
        verbose_name="failures in a row", help_text="Failed reads since the last successful one.",
    )
    stale = models.BooleanField(
        default=True, editable=False,
        help_text="The last reading is older than the site's measurement max age: a dynamic zone fed by this meter "
        "uses its fallback current.",
    )
    # The running minute of history (flushed into a MeterReading when the minute is over).
    history_minute = models.DateTimeField(null=True, blank=True, editable=False)
    history_samples = models.PositiveIntegerField(default=0, editable=False)
    history_sums = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    # --- derived from the configuration --------------------------------------------
    def register_map(self) -> RegisterMap:
        """The map to read; ValueError (with the reason) for a bad generic spec."""
        if self.meter_type == GENERIC:
            try:
                return build_generic_map(self.register_spec, word_order=self.word_order or "big")
            except TypeError as exc:
                raise ValueError(str(exc)) from None
        return registers.get_register_map(self.meter_type)

    def to_config(self) -> MeterConfig:
        """How :mod:`meters.modbus` reaches this meter; ValueError when the configuration is unusable.
        (pymodbus loads here, in the processes that reach meters, not in every web process's start.)"""
        from meters.modbus import MeterConfig  # noqa: PLC0415

        return MeterConfig(
            register_map=self.register_map(),
            transport=self.transport,  # type: ignore[arg-type]
            host=self.host,
            port=self.port,
            serial_device=self.serial_device,
            baudrate=self.baudrate,
            parity=self.parity,  # type: ignore[arg-type]
            stopbits=self.stopbits,
            unit_id=self.unit_id,
            timeout_s=self.timeout_s,
            word_order=self.word_order or None,  # type: ignore[arg-type]
        )

    @property
    def address(self) -> str:
        """Where the meter is, for lists and messages."""
        if self.transport == Transport.RTU_SERIAL:
            return f"{self.serial_device} unit {self.unit_id}"
        return f"{self.host}:{self.port} unit {self.unit_id}"

    def required_quantities(self) -> tuple[str, ...]:
        """Quantities a reading must have to be used for this meter's role (those its map provides)."""
        try:
            provided = set(self.register_map().quantities)
        except (KeyError, ValueError):
            return ROLE_QUANTITIES[self.role]
        return tuple(q for q in ROLE_QUANTITIES[self.role] if q in provided)

    # --- time rules over fields and now (tested on unsaved objects) ------------------
    def is_due(self, now: dt.datetime) -> bool:
        if not self.enabled:
            return False
        if self.last_poll_at is None:
            return True
        return (now - self.last_poll_at).total_seconds() >= self.poll_period_s - DUE_SLACK_S

    def is_stale(self, now: dt.datetime, max_age_s: float) -> bool:
        if self.last_reading_at is None:
            return True
        return (now - self.last_reading_at).total_seconds() > max_age_s

    # --- validation ----------------------------------------------------------------
    def clean(self) -> None:
        register_map = self._clean_register_map()
        self._clean_connection()
        if register_map is not None:
            try:
                self.to_config()
            except ValueError as exc:
                raise ValidationError(str(exc)) from None
        self._clean_role(register_map)

    def _clean_register_map(self) -> RegisterMap | None:
        if self.meter_type != GENERIC:
            if self.register_spec:
                raise ValidationError({"register_spec": "Only for the generic meter type: leave it empty ({})."})
            return METER_TYPES.get(self.meter_type)  # None: an unknown type, reported by the field
        try:
            return self.register_map()
        except ValueError as exc:
            raise ValidationError({"register_spec": str(exc)}) from None

    def _clean_connection(self) -> None:
        if self.transport == Transport.RTU_SERIAL:
            if not self.serial_device:
                raise ValidationError({"serial_device": "A serial meter needs its device (e.g. /dev/ttyUSB0)."})
            if not 1 <= self.unit_id <= 247:
                raise ValidationError({"unit_id": "On a serial line the unit id is 1 to 247."})
        elif not self.host:
            raise ValidationError({"host": "A Modbus TCP meter needs the IP address or name of the meter/gateway."})

    def _clean_role(self, register_map: RegisterMap | None) -> None:
        if self.role == MeterRole.MONITOR:
            return
        if self.zone_id is None:
            raise ValidationError({"zone": "Choose the zone this meter measures (or the role 'Monitoring only')."})
        if register_map is not None:
            self._clean_role_quantities(set(register_map.quantities))
        if self.enabled and self.role in (MeterRole.ZONE_TOTAL, MeterRole.PV):
            others = Meter.objects.filter(zone_id=self.zone_id, role=self.role, enabled=True).exclude(pk=self.pk)
            if others.exists():
                raise ValidationError(
                    {"role": f"Zone already has an enabled '{self.get_role_display()}' meter: {others.first()}."}
                )

    def _clean_role_quantities(self, provided: set[str]) -> None:
        has_currents = set(PHASE_CURRENTS) <= provided
        if self.role == MeterRole.ZONE_TOTAL:
            if not (has_currents or registers.POWER_W in provided):
                raise ValidationError("A zone consumption meter must provide the three phase currents or the power.")
            # Otherwise the dynamic zone would sit on its fallback for want of a value, silently.
            zone = self.zone
            assert zone is not None  # clean() returned before this when zone_id is None
            if zone.max_current_a is not None and not has_currents:
                raise ValidationError("The zone has a per-phase limit: its meter must provide the three currents.")
            if zone.max_power_kw is not None and registers.POWER_W not in provided:
                raise ValidationError("The zone has a power limit: its meter must provide the total power (power_w).")
        if self.role == MeterRole.PV and registers.POWER_W not in provided:
            raise ValidationError("A PV meter must provide the total power (power_w).")
        if self.role == MeterRole.EV_SUBMETER and not provided & set(PHASE_CURRENTS):
            raise ValidationError("An EV sub-meter must provide phase currents.")


def _quantity_field(verbose_name: str, help_text: str = "Average over the minute.") -> models.FloatField:
    return models.FloatField(verbose_name, null=True, blank=True, help_text=help_text)


class MeterReading(models.Model):
    """History: one meter's values averaged over one minute (counters: the minute's last value)."""

    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="readings", help_text="The meter read.")
    start = models.DateTimeField(help_text="Start of the minute (UTC).", verbose_name="minute")
    samples = models.PositiveIntegerField(help_text="Readings averaged into this minute.", verbose_name="readings")
    current_l1_a = _quantity_field(verbose_name="current L1 (A)")
    current_l2_a = _quantity_field(verbose_name="current L2 (A)")
    current_l3_a = _quantity_field(verbose_name="current L3 (A)")
    voltage_l1_v = _quantity_field(verbose_name="voltage L1-N (V)")
    voltage_l2_v = _quantity_field(verbose_name="voltage L2-N (V)")
    voltage_l3_v = _quantity_field(verbose_name="voltage L3-N (V)")
    power_w = _quantity_field(verbose_name="power (W)")
    power_l1_w = _quantity_field(verbose_name="power L1 (W)")
    power_l2_w = _quantity_field(verbose_name="power L2 (W)")
    power_l3_w = _quantity_field(verbose_name="power L3 (W)")
    frequency_hz = _quantity_field(verbose_name="frequency (Hz)")
    energy_import_wh = _quantity_field(
        verbose_name="energy imported (Wh)", help_text="The counter at the end of the minute.",
    )
    energy_export_wh = _quantity_field(
        verbose_name="energy exported (Wh)", help_text="The counter at the end of the minute.",
    )

    class Meta:
        ordering = ["-start", "meter"]
        constraints = [models.UniqueConstraint(fields=["meter", "start"], name="one_reading_per_meter_minute")]
        indexes = [models.Index(fields=["start"], name="meters_reading_start_idx")]

    def __str__(self) -> str:
        return f"{self.meter} {self.start:%Y-%m-%d %H:%M}"

    def values(self) -> dict[str, float]:
        """The quantities this row has, keyed like a live reading."""
        found = {q: getattr(self, q) for q in registers.QUANTITIES}
        return {q: v for q, v in found.items() if v is not None and math.isfinite(v)}
