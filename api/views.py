"""BEMS API: a building management system pushes a zone's measured consumption.

Thin transport over ``loadmgmt.services.zone_record_measurement``, the same write the meter
poller uses. Staff accounts with loadmgmt.change_zone only (HTTP Basic or session).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.shortcuts import get_object_or_404
from rest_framework import serializers
from rest_framework.permissions import BasePermission, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from evce import clock
from loadmgmt.models import Zone
from loadmgmt.services import zone_record_measurement

#: A BEMS clock a little ahead is tolerated; further ahead, its reading would block newer ones.
MAX_CLOCK_SKEW_S = 5.0
#: Beyond these a value is a unit mistake or garbage, not a building's consumption.
MAX_CURRENT_A = 10_000.0
MAX_POWER_KW = 100_000.0


class ZoneMeasurementSerializer(serializers.Serializer):
    current_a = serializers.ListField(
        child=serializers.FloatField(min_value=0, max_value=MAX_CURRENT_A), min_length=3, max_length=3,
        required=False, help_text="Per-phase current L1, L2, L3 (A) of the zone's total consumption, EV included.",
    )
    power_kw = serializers.FloatField(min_value=-MAX_POWER_KW, max_value=MAX_POWER_KW, required=False)
    pv_power_kw = serializers.FloatField(min_value=0, max_value=MAX_POWER_KW, required=False)
    at = serializers.DateTimeField(required=False, help_text="When measured (ISO 8601); default: now.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # PV alone would refresh the zone's timestamp without a consumption value: refused.
        if "current_a" not in attrs and "power_kw" not in attrs:
            raise serializers.ValidationError("Give current_a (three per-phase values, A) and/or power_kw.")
        now: dt.datetime = self.context["now"]
        attrs.setdefault("at", now)
        if (attrs["at"] - now).total_seconds() > MAX_CLOCK_SKEW_S:
            raise serializers.ValidationError({"at": f"is in the future (server time is {now.isoformat()})."})
        return attrs


class MayPushMeasurements(BasePermission):
    """Staff with the right to change zones (superusers, or an account given
    "loadmgmt | zone | Can change zone"): a pushed reading moves dynamic-zone limits, so
    the read-only roles (viewer, operator) may not."""

    message = "Pushing a zone measurement needs the permission loadmgmt.change_zone."

    def has_permission(self, request: Request, view: object) -> bool:
        user = request.user
        return bool(user and user.is_staff and user.has_perm("loadmgmt.change_zone"))


class ZoneMeasurementView(APIView):
    permission_classes = [IsAdminUser, MayPushMeasurements]

    def post(self, request: Request, zone_id: int) -> Response:
        zone = get_object_or_404(Zone, pk=zone_id)
        serializer = ZoneMeasurementSerializer(data=request.data, context={"now": clock.now()})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        current = data.get("current_a")
        zone_record_measurement(zone=zone, at=data["at"], current_a=None if current is None else tuple(current),
                                power_kw=data.get("power_kw"), pv_power_kw=data.get("pv_power_kw"))
        zone.refresh_from_db()
        stored = zone.measured_at == data["at"]
        return Response({
            "zone": zone.pk,
            "stored": stored,
            "detail": "stored" if stored else "a newer measurement is already stored; this one was ignored",
            "measured_at": zone.measured_at,
        })
