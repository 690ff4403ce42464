"""Shapes of the v1 API: what goes in (validated, with a message per field) and what comes out."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model
from rest_framework import serializers

from api.errors import Conflict
from api.models import Integration
from api.selectors import ZoneStatus
from badges.models import Badge, BadgeGroup
from chargers.models import Charger
from loadmgmt.models import LimitState, Zone
from meters.models import Meter, MeterReading
from transactions.models import Transaction

#: The longest a setpoint may be written for (a week): beyond, ask for a permanent setpoint.
MAX_SETPOINT_DURATION_S = 7 * 86400
MAX_CURRENT_A = 10_000.0
MAX_POWER_KW = 100_000.0


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


# --- setpoints and heartbeat -------------------------------------------------------------------
class SetpointInSerializer(serializers.Serializer):
    current_a = serializers.FloatField(min_value=0, max_value=MAX_CURRENT_A, required=False, allow_null=True,
                                       help_text="Zone budget per phase (A).")
    power_kw = serializers.FloatField(min_value=0, max_value=MAX_POWER_KW, required=False, allow_null=True,
                                      help_text="Zone budget in total power (kW).")
    valid_until = serializers.DateTimeField(required=False, allow_null=True,
                                            help_text="End of the setpoint (ISO 8601). Give this or duration_s.")
    duration_s = serializers.IntegerField(min_value=1, max_value=MAX_SETPOINT_DURATION_S, required=False,
                                          allow_null=True, help_text="Setpoint lasts this many seconds from now.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        now: dt.datetime = self.context["now"]
        integration: Integration = self.context["integration"]
        if attrs.get("current_a") is None and attrs.get("power_kw") is None:
            raise serializers.ValidationError({"current_a": "Give current_a (A per phase) and/or power_kw."})
        valid_until, duration = attrs.get("valid_until"), attrs.get("duration_s")
        if valid_until is not None and duration is not None:
            raise serializers.ValidationError({"duration_s": "Give valid_until or duration_s, not both."})
        if duration is not None:
            valid_until = now + dt.timedelta(seconds=duration)
        elif valid_until is not None:
            if valid_until <= now:
                raise serializers.ValidationError({"valid_until": f"is in the past (server time {now.isoformat()})."})
            if (valid_until - now).total_seconds() > MAX_SETPOINT_DURATION_S:
                raise serializers.ValidationError({"valid_until": "is more than 7 days ahead."})
        elif not integration.allow_permanent_setpoints:
            raise serializers.ValidationError({"valid_until": "Give valid_until or duration_s: this token may not "
                                               "write permanent setpoints."})
        attrs["valid_until"] = valid_until
        return attrs


class ControlSerializer(serializers.Serializer):
    # The stubs see Field.source here; DRF's metaclass pops declared fields out of the class namespace.
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=["setpoint", "failsafe", "expired", "configured"], help_text="What governs the zone's limit now.")
    current_a = serializers.FloatField(allow_null=True, help_text="Budget in force per phase (A), if any.")
    power_kw = serializers.FloatField(allow_null=True, help_text="Budget in force (kW), if any.")
    since = serializers.DateTimeField(allow_null=True)
    until = serializers.DateTimeField(allow_null=True, help_text="Setpoint end, or earliest end of a failsafe.")
    note = serializers.CharField()


class SetpointOutSerializer(serializers.Serializer):
    zone = serializers.IntegerField()
    integration = serializers.CharField(allow_null=True)
    requested_current_a = serializers.FloatField(allow_null=True)
    requested_power_kw = serializers.FloatField(allow_null=True)
    written_at = serializers.DateTimeField(allow_null=True)
    valid_until = serializers.DateTimeField(allow_null=True)
    in_force = ControlSerializer()


class HeartbeatOutSerializer(serializers.Serializer):
    integration = serializers.CharField()
    heartbeat_interval_s = serializers.IntegerField()
    last_heartbeat_at = serializers.DateTimeField(allow_null=True)
    lost_after = serializers.DateTimeField(allow_null=True, help_text="Failsafe from this moment without a heartbeat.")
    scope = serializers.CharField()
    allow_permanent_setpoints = serializers.BooleanField()
    failsafe_current_a = serializers.FloatField(allow_null=True)
    failsafe_power_kw = serializers.FloatField(allow_null=True)
    failsafe_min_duration_s = serializers.IntegerField()


# --- zones ---------------------------------------------------------------------------------------
class ZoneStatusSerializer(serializers.Serializer):
    """Built from ``api.selectors.ZoneStatus``."""

    id = serializers.IntegerField(source="zone.pk")
    name = serializers.CharField(source="zone.name")
    # Stubs see Field.parent (DRF's metaclass pops declared fields out of the class namespace).
    parent = serializers.IntegerField(source="zone.parent_id", allow_null=True)  # type: ignore[assignment]
    mode = serializers.CharField(source="zone.mode")
    max_current_a = serializers.FloatField(source="zone.max_current_a", allow_null=True,
                                           help_text="Configured breaker rating per phase (A).")
    max_power_kw = serializers.FloatField(source="zone.max_power_kw", allow_null=True,
                                          help_text="Configured power limit (kW).")
    fallback_current_a = serializers.FloatField(source="fallback_a")
    limit_current_a = serializers.FloatField(allow_null=True,
                                             help_text="Configured limit lowered by time of use and the budget.")
    limit_power_kw = serializers.FloatField(allow_null=True)
    time_of_use = serializers.CharField(help_text="Label of the active time-of-use rule, empty when none.")
    measured_current_a = serializers.ListField(child=serializers.FloatField(allow_null=True))
    measured_power_kw = serializers.FloatField(allow_null=True)
    measured_at = serializers.DateTimeField(allow_null=True)
    pv_power_kw = serializers.FloatField(allow_null=True)
    ev_current_a = serializers.ListField(child=serializers.FloatField(), allow_null=True,
                                         help_text="EV load measured by EV sub-meters (A per phase).")
    headroom_a = serializers.FloatField(allow_null=True)
    headroom_kw = serializers.FloatField(allow_null=True)
    control = ControlSerializer()

    def to_representation(self, instance: ZoneStatus) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["measured_current_a"] = list(instance.measured_current_a)
        return data


class SiteSerializer(serializers.Serializer):
    time = serializers.DateTimeField()
    active_sessions = serializers.IntegerField()
    chargers_connected = serializers.IntegerField()
    zones = ZoneStatusSerializer(many=True)


class MeasurementInSerializer(serializers.Serializer):
    current_a = serializers.ListField(
        child=serializers.FloatField(min_value=0, max_value=MAX_CURRENT_A), min_length=3, max_length=3,
        required=False, help_text="Per-phase current L1, L2, L3 (A) of the zone's total consumption, EV included.",
    )
    power_kw = serializers.FloatField(min_value=-MAX_POWER_KW, max_value=MAX_POWER_KW, required=False)
    pv_power_kw = serializers.FloatField(min_value=0, max_value=MAX_POWER_KW, required=False)
    at = serializers.DateTimeField(required=False, help_text="When measured (ISO 8601); default: now.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "current_a" not in attrs and "power_kw" not in attrs:
            raise serializers.ValidationError({"current_a": "Give current_a (three per-phase values, A) and/or "
                                               "power_kw."})
        now: dt.datetime = self.context["now"]
        attrs.setdefault("at", now)
        if (attrs["at"] - now).total_seconds() > 5:
            raise serializers.ValidationError({"at": f"is in the future (server time is {now.isoformat()})."})
        return attrs


class MeasurementOutSerializer(serializers.Serializer):
    zone = serializers.IntegerField()
    stored = serializers.BooleanField()
    detail = serializers.CharField()
    measured_at = serializers.DateTimeField(allow_null=True)


# --- chargers and sessions ---------------------------------------------------------------------
class ConnectorSerializer(serializers.Serializer):
    connector_id = serializers.IntegerField()
    status = serializers.CharField()
    error_code = serializers.CharField()
    status_at = serializers.DateTimeField(allow_null=True)


class LimitStateSerializer(serializers.ModelSerializer):
    class Meta:
        model = LimitState
        fields = ["connector_id", "purpose", "transaction_id", "in_force_a", "in_force_since", "pending_a",
                  "wanted_a", "binding", "waiting", "last_status", "last_answer_at"]


class ChargerSerializer(serializers.ModelSerializer):
    zone = serializers.IntegerField(source="zone_id", allow_null=True)
    connectors = ConnectorSerializer(many=True)
    limits = LimitStateSerializer(many=True, source="limit_states")

    class Meta:
        model = Charger
        fields = ["charge_point_id", "vendor", "model", "firmware_version", "registration_status", "connected",
                  "last_seen", "zone", "phases", "rated_max_current_a", "min_current_a", "vip", "connectors",
                  "limits"]


class SessionSerializer(serializers.ModelSerializer):
    charger = serializers.CharField(source="charger.charge_point_id")
    holder = serializers.SerializerMethodField()
    duration_s = serializers.SerializerMethodField()

    class Meta:
        model = Transaction
        fields = ["id", "charger", "connector_id", "id_tag", "holder", "state", "start_time", "stop_time",
                  "duration_s", "energy_wh", "peak_power_w", "stop_reason", "closed_by", "offline"]

    def get_holder(self, obj: Transaction) -> str:
        return obj.badge.holder if obj.badge_id and obj.badge else ""

    def get_duration_s(self, obj: Transaction) -> float | None:
        duration = obj.duration
        return None if duration is None else duration.total_seconds()


class EnergyRowSerializer(serializers.Serializer):
    period = serializers.CharField(help_text="YYYY-MM-DD (day) or YYYY-MM (month), site time zone.")
    sessions = serializers.IntegerField()
    energy_kwh = serializers.FloatField()
    duration_h = serializers.FloatField()


class MeterSerializer(serializers.ModelSerializer):
    zone = serializers.IntegerField(source="zone_id", allow_null=True)
    last_values = serializers.DictField(child=serializers.FloatField(allow_null=True))

    class Meta:
        model = Meter
        fields = ["id", "name", "meter_type", "role", "zone", "enabled", "stale", "last_reading_at", "last_values",
                  "last_error", "consecutive_failures"]


class MeterReadingSerializer(serializers.ModelSerializer):
    class Meta:
        model = MeterReading
        exclude = ["id", "meter"]


# --- commands ----------------------------------------------------------------------------------
class StartInSerializer(serializers.Serializer):
    id_tag = serializers.CharField(max_length=20)
    connector_id = serializers.IntegerField(min_value=1, max_value=100, required=False)


class StopInSerializer(serializers.Serializer):
    transaction_id = serializers.IntegerField(min_value=1, max_value=2**31 - 1)


class ResetInSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["Soft", "Hard"], default="Soft")


class UnlockInSerializer(serializers.Serializer):
    connector_id = serializers.IntegerField(min_value=1, max_value=100)


class CommandOutSerializer(serializers.Serializer):
    charger = serializers.CharField()
    action = serializers.CharField()
    status = serializers.CharField(help_text="The charger's answer (Accepted, Rejected, Unlocked, …).")


# --- configuration (admin scope) -------------------------------------------------------------
class ModelCleanMixin:
    """Run the model's own ``clean()`` so the API refuses what the admin refuses, per field."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        model: type[Model] = self.Meta.model  # type: ignore[attr-defined]
        instance = getattr(self, "instance", None)
        candidate = model(**{f.attname: getattr(instance, f.attname) for f in model._meta.concrete_fields}) \
            if instance is not None else model()
        for key, value in attrs.items():
            field = model._meta.get_field(key)
            if not field.many_to_many:
                setattr(candidate, key, value)
        try:
            candidate.clean()
        except DjangoValidationError as error:
            raise serializers.ValidationError(
                error.message_dict if hasattr(error, "error_dict") else {"non_field_errors": error.messages}
            ) from None
        return attrs


class ZoneConfigSerializer(ModelCleanMixin, serializers.ModelSerializer):
    class Meta:
        model = Zone
        fields = ["id", "name", "parent", "max_current_a", "max_power_kw", "mode", "fallback_current_a",
                  "add_pv_production"]
        extra_kwargs = {"max_current_a": {"max_value": MAX_CURRENT_A}, "max_power_kw": {"max_value": MAX_POWER_KW},
                        "fallback_current_a": {"max_value": MAX_CURRENT_A}}


class ChargerConfigSerializer(ModelCleanMixin, serializers.ModelSerializer):
    class Meta:
        model = Charger
        fields = ["id", "charge_point_id", "registration_status", "zone", "rated_max_current_a", "phases",
                  "supply_phase", "min_current_a", "vip", "notes"]


class MeterConfigSerializer(ModelCleanMixin, serializers.ModelSerializer):
    class Meta:
        model = Meter
        fields = ["id", "name", "meter_type", "register_spec", "word_order", "transport", "host", "port",
                  "serial_device", "baudrate", "parity", "stopbits", "unit_id", "timeout_s", "poll_period_s",
                  "enabled", "role", "zone", "history_retention_days"]


class StrictSlugRelatedField(serializers.SlugRelatedField):
    """DRF turns "" into null for relations; the API says null, so "" is an error here."""

    def run_validation(self, data: Any = serializers.empty) -> Any:
        if data == "":
            self.fail("does_not_exist", slug_name=self.slug_field, value=data)
        return super().run_validation(data)


class BadgeSerializer(ModelCleanMixin, serializers.ModelSerializer):
    group = StrictSlugRelatedField(slug_field="name", queryset=BadgeGroup.objects.all(), allow_null=True,
                                         required=False)
    valid_until = serializers.DateTimeField(source="expires_at", allow_null=True, required=False)

    class Meta:
        model = Badge
        fields = ["id", "id_tag", "holder", "email", "reference", "group", "status", "valid_from", "valid_until",
                  "vip", "parent_id_tag"]

    def validate_id_tag(self, value: str) -> str:
        clash = Badge.objects.by_id_tag(value)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise Conflict("A badge with this id tag already exists (id tags ignore case).")
        return value
