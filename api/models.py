"""BEMS integrations (API tokens), the zone budgets they write, and the watchdog's state.

A building system is an ``Integration``: one token, one scope, its own heartbeat interval and
failsafe. A zone it budgets has one ``ZoneControl`` row: the setpoint in force (or expired)
and, when the integration's heartbeat was lost, since when the zone is in failsafe. Whether a
budget is in force at a given moment is decided by ``api.watchdog.zone_control_status`` from
these fields and ``now`` alone, so nothing has to run for a setpoint to expire or a failsafe to
start: a dead BEMS (or a dead worker) cannot leave the site at a stale budget.
"""

from __future__ import annotations

import hashlib
import secrets

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from loadmgmt.models import Zone

#: Tokens start with this prefix so that a leaked one is recognisable (secret scanners, logs).
TOKEN_PREFIX = "evce_"  # noqa: S105 - a prefix, not a secret


class Scope(models.TextChoices):
    """What a token may do; each scope includes the ones before it (read < setpoints < commands < admin)."""

    READ = "read", "Read only"
    SETPOINTS = "setpoints", "Read, push measurements, write setpoints"
    COMMANDS = "commands", "Setpoints and remote commands (start/stop/reset/unlock)"
    ADMIN = "admin", "Everything, including badges and site configuration"


SCOPE_ORDER = [Scope.READ, Scope.SETPOINTS, Scope.COMMANDS, Scope.ADMIN]


def scope_allows(granted: str, needed: str) -> bool:
    return SCOPE_ORDER.index(Scope(granted)) >= SCOPE_ORDER.index(Scope(needed))


def hash_token(raw: str) -> str:
    """Tokens are stored as SHA-256: they are long random strings, so no slow hash is needed."""
    return hashlib.sha256(raw.encode()).hexdigest()


class Integration(models.Model):
    """One building system (or script) talking to the API with its own token."""

    name = models.CharField(max_length=60, unique=True, help_text="e.g. 'Siemens Desigo': shown in read-backs.")
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.READ)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_hint = models.CharField(max_length=12, editable=False, help_text="First characters, to recognise it.")
    allow_permanent_setpoints = models.BooleanField(
        default=False, help_text="May write setpoints without valid_until/duration_s (they still obey the watchdog)."
    )
    heartbeat_interval_s = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(5), MaxValueValidator(86400)],
        help_text="The integration calls POST /api/v1/heartbeat this often; lost after twice this long.",
    )
    failsafe_current_a = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="Per-phase zone limit while the heartbeat is lost; empty = each zone's fallback current.",
    )
    failsafe_power_kw = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="Optional power limit in failsafe."
    )
    failsafe_min_duration_s = models.PositiveIntegerField(
        default=7200, validators=[MaxValueValidator(7 * 86400)],
        help_text="A failsafe lasts at least this long, even if the heartbeat comes back sooner.",
    )
    last_heartbeat_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, help_text="Set to revoke the token (kept for audit).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.failsafe_current_a is not None and self.failsafe_current_a > 1000:
            raise ValidationError({"failsafe_current_a": "Unrealistic current for a zone (max 1000 A)."})

    def issue_token(self) -> str:
        """Give the integration a new token; returns it in clear (shown once, never stored)."""
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.token_hash = hash_token(raw)
        self.token_hint = raw[: len(TOKEN_PREFIX) + 4]
        return raw

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ZoneControl(models.Model):
    """The BEMS budget of one zone: the latest setpoint and the watchdog's failsafe mark."""

    zone = models.OneToOneField(Zone, on_delete=models.CASCADE, related_name="bems_control")
    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="zone_controls")
    current_a = models.FloatField(null=True, blank=True, help_text="Budget per phase (A).")
    power_kw = models.FloatField(null=True, blank=True, help_text="Budget in total power (kW).")
    written_at = models.DateTimeField(help_text="When the setpoint was written.")
    valid_until = models.DateTimeField(null=True, blank=True, help_text="Empty: permanent (if the token allows).")
    failsafe_since = models.DateTimeField(
        null=True, blank=True,
        help_text="Start of the heartbeat loss this zone has not left yet (needs a newer setpoint and the minimum "
        "failsafe duration).",
    )

    class Meta:
        verbose_name = "zone budget (BEMS)"
        verbose_name_plural = "zone budgets (BEMS)"

    def __str__(self) -> str:
        return f"{self.zone}: {self.integration}"


class SetpointRecord(models.Model):
    """Append-only history of the setpoints integrations wrote (who, what, for how long)."""

    zone = models.ForeignKey(Zone, on_delete=models.CASCADE, related_name="bems_setpoints")
    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="setpoint_records")
    current_a = models.FloatField(null=True, blank=True)
    power_kw = models.FloatField(null=True, blank=True)
    written_at = models.DateTimeField(db_index=True)
    valid_until = models.DateTimeField(null=True, blank=True)
    released = models.BooleanField(default=False, help_text="The integration gave the zone back.")

    class Meta:
        ordering = ["-written_at", "-id"]
        verbose_name = "BEMS setpoint record"

    def __str__(self) -> str:
        return f"{self.written_at:%Y-%m-%d %H:%M:%S} {self.zone} {self.current_a} A {self.power_kw} kW"
