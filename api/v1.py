"""The v1 BEMS API: thin views over the project's services and selectors.

Every view authenticates with an integration token or a staff session (``api.auth``), checks
the caller's scope (reads: ``read``; each write names its scope), throttles writes, and answers
errors as JSON (400 per field, 401, 403, 404, 409, 429; see ``api.errors``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models import Prefetch, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status, viewsets
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.permissions import BasePermission, OperandHolder, SingleOperandHolder
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from api import selectors, services
from api import serializers as s
from api.auth import AUTHENTICATION, HasScope, WriteRateThrottle, integration_of
from api.errors import Conflict
from api.models import Integration, Scope, ZoneControl
from api.watchdog import heartbeat_deadline
from badges.models import Badge
from badges.services import badges_changed
from chargers import commands
from chargers.models import Charger, Connector
from chargers.services import registration_changed
from evce import clock
from loadmgmt.models import LimitState, Zone
from loadmgmt.services import zone_record_measurement
from meters.models import Meter, MeterReading
from meters.services import meter_release_zone
from transactions.models import Transaction, TransactionState
from transactions.selectors import Period, energy_by_day, energy_by_month, transactions_history

ERRORS: dict[int, OpenApiResponse] = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid input: a message per field."),
    401: OpenApiResponse(s.DetailSerializer, description="No or bad credentials."),
    403: OpenApiResponse(s.DetailSerializer, description="The caller's scope does not allow this."),
    404: OpenApiResponse(s.DetailSerializer, description="Not found."),
    409: OpenApiResponse(s.DetailSerializer, description="Conflicts with the current state."),
    429: OpenApiResponse(s.DetailSerializer, description="Too many writes: retry after the given time."),
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: ERRORS[code] for code in (401, 403, *codes)}


class V1Mixin:
    # Typed as APIView declares them, so the mixin and the view agree on what they hold.
    authentication_classes: Sequence[type[BaseAuthentication]] = AUTHENTICATION
    # JSON only: one body format to document and validate (form encodings blur null and "").
    parser_classes: Sequence[type[BaseParser]] = [JSONParser]
    permission_classes: Sequence[type[BasePermission] | OperandHolder | SingleOperandHolder] = [HasScope]
    throttle_classes: Sequence[type[BaseThrottle]] = [WriteRateThrottle]
    write_scope: str = Scope.ADMIN


class V1View(V1Mixin, APIView):
    pass


def _integration_or_403(request: Request) -> Integration:
    integration = integration_of(request)
    if integration is None:
        raise PermissionDenied("Setpoints and heartbeats need an integration token: the watchdog belongs to an "
                               "integration, not to a user session.")
    return integration


# --- site and zones --------------------------------------------------------------------------
class SiteView(V1View):
    @extend_schema(responses={200: s.SiteSerializer, **errors()}, summary="Site: zone tree with limits and load")
    def get(self, request: Request) -> Response:
        now = clock.now()
        body = {
            "time": now,
            "active_sessions": selectors.active_session_count(),
            "chargers_connected": Charger.objects.filter(connected=True).count(),
            "zones": selectors.zone_statuses(now),
        }
        return Response(s.SiteSerializer(body).data)


class ZoneListView(V1View):
    @extend_schema(responses={200: s.ZoneStatusSerializer(many=True), **errors()}, summary="Zones with their status")
    def get(self, request: Request) -> Response:
        return Response(s.ZoneStatusSerializer(selectors.zone_statuses(clock.now()), many=True).data)


class ZoneDetailView(V1View):
    @extend_schema(responses={200: s.ZoneStatusSerializer, **errors(404)}, summary="One zone's status")
    def get(self, request: Request, zone_id: int) -> Response:
        statuses = selectors.zone_statuses(clock.now(), [zone_id])
        if not statuses:
            raise Http404("No zone with this id.")
        return Response(s.ZoneStatusSerializer(statuses[0]).data)


def _setpoint_body(zone: Zone) -> dict[str, Any]:
    now = clock.now()
    status_ = selectors.zone_statuses(now, [zone.pk])[0]
    control = ZoneControl.objects.filter(zone=zone).select_related("integration").first()
    return {
        "zone": zone.pk,
        "integration": control.integration.name if control else None,
        "requested_current_a": control.current_a if control else None,
        "requested_power_kw": control.power_kw if control else None,
        "written_at": control.written_at if control else None,
        "valid_until": control.valid_until if control else None,
        "in_force": status_.control,
    }


class ZoneSetpointView(V1View):
    """A zone's BEMS budget: read what is in force (and why), write one, give the zone back."""

    write_scope = Scope.SETPOINTS

    @extend_schema(responses={200: s.SetpointOutSerializer, **errors(404)}, summary="Budget in force, since, why")
    def get(self, request: Request, zone_id: int) -> Response:
        zone = get_object_or_404(Zone, pk=zone_id)
        return Response(s.SetpointOutSerializer(_setpoint_body(zone)).data)

    @extend_schema(request=s.SetpointInSerializer,
                   responses={200: s.SetpointOutSerializer, **errors(400, 404, 409, 429)},
                   summary="Write the zone's budget (expires; watchdog)")
    def put(self, request: Request, zone_id: int) -> Response:
        zone = get_object_or_404(Zone, pk=zone_id)
        integration = _integration_or_403(request)
        now = clock.now()
        serializer = s.SetpointInSerializer(data=request.data, context={"now": now, "integration": integration})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            services.zone_setpoint_write(integration=integration, zone=zone, current_a=data.get("current_a"),
                                         power_kw=data.get("power_kw"), valid_until=data["valid_until"], now=now)
        except services.SetpointConflict as error:
            raise Conflict(str(error)) from None
        return Response(s.SetpointOutSerializer(_setpoint_body(zone)).data)

    @extend_schema(responses={204: None, **errors(400, 404, 409, 429)}, summary="Give the zone back (not in failsafe)")
    def delete(self, request: Request, zone_id: int) -> Response:
        zone = get_object_or_404(Zone, pk=zone_id)
        integration = _integration_or_403(request)
        try:
            services.zone_setpoint_release(integration=integration, zone=zone, now=clock.now())
        except services.SetpointConflict as error:
            raise Conflict(str(error)) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class ZoneMeasurementView(V1View):
    write_scope = Scope.SETPOINTS

    @extend_schema(request=s.MeasurementInSerializer,
                   responses={200: s.MeasurementOutSerializer, **errors(400, 404, 429)},
                   summary="Push the zone's measured consumption (older never overwrites newer)")
    def post(self, request: Request, zone_id: int) -> Response:
        zone = get_object_or_404(Zone, pk=zone_id)
        serializer = s.MeasurementInSerializer(data=request.data, context={"now": clock.now()})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        current = data.get("current_a")
        zone_record_measurement(zone=zone, at=data["at"], current_a=None if current is None else tuple(current),
                                power_kw=data.get("power_kw"), pv_power_kw=data.get("pv_power_kw"))
        zone.refresh_from_db()
        stored = zone.measured_at == data["at"]
        detail = "stored" if stored else "a newer measurement is already stored; this one was ignored"
        return Response({"zone": zone.pk, "stored": stored, "measured_at": zone.measured_at, "detail": detail})


class HeartbeatView(V1View):
    write_scope = Scope.SETPOINTS

    def _body(self, integration: Integration) -> dict[str, Any]:
        return {
            "integration": integration.name, "heartbeat_interval_s": integration.heartbeat_interval_s,
            "last_heartbeat_at": integration.last_heartbeat_at, "lost_after": heartbeat_deadline(integration),
            "scope": integration.scope, "allow_permanent_setpoints": integration.allow_permanent_setpoints,
            "failsafe_current_a": integration.failsafe_current_a, "failsafe_power_kw": integration.failsafe_power_kw,
            "failsafe_min_duration_s": integration.failsafe_min_duration_s,
        }

    @extend_schema(responses={200: s.HeartbeatOutSerializer, **errors()}, summary="This integration's watchdog")
    def get(self, request: Request) -> Response:
        integration = _integration_or_403(request)
        integration.refresh_from_db()
        return Response(s.HeartbeatOutSerializer(self._body(integration)).data)

    @extend_schema(request=None, responses={200: s.HeartbeatOutSerializer, **errors(429)},
                   summary="Heartbeat: call every heartbeat_interval_s")
    def post(self, request: Request) -> Response:
        integration = _integration_or_403(request)
        services.integration_heartbeat(integration=integration, now=clock.now())
        integration.refresh_from_db()
        return Response(s.HeartbeatOutSerializer(self._body(integration)).data)


# --- chargers, sessions, meters, energy ------------------------------------------------------
def _chargers() -> QuerySet[Charger]:
    return Charger.objects.prefetch_related(
        Prefetch("connectors", queryset=Connector.objects.order_by("connector_id")),
        Prefetch("limit_states", queryset=LimitState.objects.order_by("connector_id")),
    )


class ChargerListView(V1Mixin, generics.ListAPIView):
    serializer_class = s.ChargerSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Charger]:
        return _chargers()

    @extend_schema(responses={200: s.ChargerSerializer(many=True), **errors()},
                   summary="Chargers: status, connectors, the loop's limits per connector")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class ChargerDetailView(V1Mixin, generics.RetrieveAPIView):
    serializer_class = s.ChargerSerializer
    lookup_field = "charge_point_id"

    def get_queryset(self) -> QuerySet[Charger]:
        return _chargers()

    @extend_schema(responses={200: s.ChargerSerializer, **errors(404)}, summary="One charger")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class StrictCursor(CursorPagination):
    """A cursor that cannot be decoded is a bad request (400), not a missing page (DRF's 404)."""

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise serializers.ValidationError({"cursor": "Invalid cursor: use the 'next'/'previous' links."}) from None


class SessionCursor(StrictCursor):
    ordering = ("-start_time", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


SESSION_FILTERS = [
    OpenApiParameter("from", OpenApiTypes.DATE, description="Sessions started on or after this day (site time)."),
    OpenApiParameter("to", OpenApiTypes.DATE, description="… and on or before this day."),
    OpenApiParameter("charger", OpenApiTypes.STR, description="Charge point id."),
    OpenApiParameter("id_tag", OpenApiTypes.STR, description="Badge id tag (ignoring case)."),
    OpenApiParameter("state", OpenApiTypes.STR, enum=list(TransactionState.values)),
]


class PeriodFilter(serializers.Serializer):
    to = serializers.DateField(required=False)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = serializers.DateField(required=False)  # a keyword in Python, a field here
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "from" in attrs and "to" in attrs and attrs["to"] < attrs["from"]:
            raise serializers.ValidationError({"to": "is before 'from'."})
        return attrs


EARLIEST_DAY = dt.date(1970, 1, 2)
LATEST_DAY = dt.date(9000, 12, 31)


def _period(request: Request) -> Period | None:
    params = PeriodFilter(data=request.query_params)
    params.is_valid(raise_exception=True)
    first, last = params.validated_data.get("from"), params.validated_data.get("to")
    if first is None and last is None:
        return None
    # Open ends and far-away days are clamped to a range every time zone can convert.
    first = min(max(first or EARLIEST_DAY, EARLIEST_DAY), LATEST_DAY)
    last = min(max(last or LATEST_DAY, EARLIEST_DAY), LATEST_DAY)
    return Period.of_days(first, max(first, last))


class SessionListView(V1Mixin, generics.ListAPIView):
    serializer_class = s.SessionSerializer
    pagination_class = SessionCursor

    def get_queryset(self) -> QuerySet[Transaction]:
        params = self.request.query_params
        charger_pk = None
        if params.get("charger"):
            charger_pk = Charger.objects.filter(charge_point_id=params["charger"]).values_list("pk", flat=True).first()
            if charger_pk is None:
                return Transaction.objects.none()
        sessions = transactions_history(period=_period(self.request), charger_pk=charger_pk)
        if params.get("id_tag"):
            sessions = sessions.filter(id_tag__iexact=params["id_tag"])
        if params.get("state"):
            if params["state"] not in TransactionState.values:
                raise serializers.ValidationError({"state": f"use one of {', '.join(TransactionState.values)}"})
            sessions = sessions.filter(state=params["state"])
        return sessions

    @extend_schema(parameters=SESSION_FILTERS, responses={200: s.SessionSerializer(many=True), **errors(400)},
                   summary="Sessions history (newest first, cursor pagination)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class ActiveSessionListView(V1Mixin, generics.ListAPIView):
    serializer_class = s.SessionSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Transaction]:
        return Transaction.objects.filter(state=TransactionState.ACTIVE).select_related("charger", "badge")

    @extend_schema(responses={200: s.SessionSerializer(many=True), **errors()}, summary="Sessions running now")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class EnergyView(V1View):
    @extend_schema(
        parameters=[OpenApiParameter("kind", OpenApiTypes.STR, enum=["day", "month"], default="day"),
                    *SESSION_FILTERS[:2]],
        responses={200: s.EnergyRowSerializer(many=True), **errors(400)},
        summary="Energy charged per day or month (sessions count on the day they started)",
    )
    def get(self, request: Request) -> Response:
        kind = request.query_params.get("kind", "day")
        if kind not in ("day", "month"):
            raise serializers.ValidationError({"kind": "use 'day' or 'month'"})
        sessions = transactions_history(period=_period(request))
        rows = energy_by_day(sessions) if kind == "day" else energy_by_month(sessions)
        return Response([{**row, "period": row.pop(kind)} for row in rows])


class MeterListView(V1Mixin, generics.ListAPIView):
    serializer_class = s.MeterSerializer
    pagination_class = None
    queryset = Meter.objects.all()

    @extend_schema(responses={200: s.MeterSerializer(many=True), **errors()}, summary="Meters, latest readings")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class ReadingCursor(StrictCursor):
    ordering = "-start"
    page_size = 120
    page_size_query_param = "page_size"
    max_page_size = 1440


class MeterHistoryView(V1Mixin, generics.ListAPIView):
    serializer_class = s.MeterReadingSerializer
    pagination_class = ReadingCursor

    def get_queryset(self) -> QuerySet[MeterReading]:
        meter = get_object_or_404(Meter, pk=self.kwargs["meter_id"])
        return MeterReading.objects.filter(meter=meter)

    @extend_schema(responses={200: s.MeterReadingSerializer(many=True), **errors(400, 404)},
                   summary="A meter's 1-minute history (newest first)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


# --- commands ------------------------------------------------------------------------------------
COMMANDS: dict[str, tuple[type[serializers.Serializer], str]] = {
    "start": (s.StartInSerializer, "RemoteStartTransaction"),
    "stop": (s.StopInSerializer, "RemoteStopTransaction"),
    "reset": (s.ResetInSerializer, "Reset"),
    "unlock": (s.UnlockInSerializer, "UnlockConnector"),
}


def _ocpp_payload(command: str, data: dict[str, Any]) -> dict[str, Any]:
    if command == "start":
        payload: dict[str, Any] = {"idTag": data["id_tag"]}
        if "connector_id" in data:
            payload["connectorId"] = data["connector_id"]
        return payload
    if command == "stop":
        return {"transactionId": data["transaction_id"]}
    if command == "reset":
        return {"type": data["type"]}
    return {"connectorId": data["connector_id"]}


class CommandError(Conflict):
    pass


class ChargerGatewayError(Conflict):
    status_code = status.HTTP_502_BAD_GATEWAY


class ChargerGatewayTimeout(Conflict):
    status_code = status.HTTP_504_GATEWAY_TIMEOUT


def _command_view(command: str) -> type[V1View]:
    in_serializer, action = COMMANDS[command]

    class CommandView(V1View):
        write_scope = Scope.COMMANDS

        @extend_schema(
            request=in_serializer, operation_id=f"charger_command_{command}",
            responses={200: s.CommandOutSerializer, **errors(400, 404, 409, 429),
                       502: OpenApiResponse(s.DetailSerializer, description="The charger answered a CALLERROR."),
                       504: OpenApiResponse(s.DetailSerializer, description="The charger did not answer in time.")},
            summary=f"{action} (OCPP)",
        )
        def post(self, request: Request, charge_point_id: str) -> Response:
            charger = get_object_or_404(Charger, charge_point_id=charge_point_id)
            serializer = in_serializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            if not charger.connected or not charger.channel_name:
                raise Conflict(f"charger {charge_point_id!r} is offline")
            try:
                answer = commands.send_call(charge_point_id, action, _ocpp_payload(command, serializer.validated_data))
            except commands.ChargerOffline as error:
                raise Conflict(f"{error}") from None
            except commands.ChargerTimeout as error:
                raise ChargerGatewayTimeout(str(error)) from None
            except commands.ChargerCallError as error:
                raise ChargerGatewayError(f"the charger answered a CALLERROR: {error}") from None
            except commands.CallFailed as error:
                raise Conflict(str(error)) from None
            answer_status = str(answer.get("status", ""))
            if answer_status not in ("Accepted", "Unlocked"):
                raise Conflict(f"the charger answered {action} with {answer_status or 'no status'}")
            return Response({"charger": charge_point_id, "action": action, "status": answer_status})

    CommandView.__name__ = f"Charger{command.title()}View"
    return CommandView


# --- configuration (admin scope) -----------------------------------------------------------------
class AdminViewSet(V1Mixin, viewsets.ModelViewSet):
    """CRUD for commissioning scripts; saves are atomic so a refused write leaves nothing behind."""

    pagination_class = None
    write_scope = Scope.ADMIN

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        with transaction.atomic():
            serializer.save()

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        with transaction.atomic():
            serializer.save()

    def perform_destroy(self, instance: Any) -> None:
        with transaction.atomic():
            instance.delete()


CRUD_ERRORS = errors(400, 404, 409, 429)


@extend_schema_view(list=extend_schema(responses={200: s.ZoneConfigSerializer(many=True), **errors()}),
                    create=extend_schema(responses={201: s.ZoneConfigSerializer, **CRUD_ERRORS}),
                    retrieve=extend_schema(responses={200: s.ZoneConfigSerializer, **errors(404)}),
                    update=extend_schema(responses={200: s.ZoneConfigSerializer, **CRUD_ERRORS}),
                    partial_update=extend_schema(responses={200: s.ZoneConfigSerializer, **CRUD_ERRORS}),
                    destroy=extend_schema(responses={204: None, **CRUD_ERRORS}))
class ZoneConfigViewSet(AdminViewSet):
    serializer_class = s.ZoneConfigSerializer
    queryset = Zone.objects.all()


@extend_schema_view(list=extend_schema(responses={200: s.ChargerConfigSerializer(many=True), **errors()}),
                    create=extend_schema(responses={201: s.ChargerConfigSerializer, **CRUD_ERRORS}),
                    retrieve=extend_schema(responses={200: s.ChargerConfigSerializer, **errors(404)}),
                    update=extend_schema(responses={200: s.ChargerConfigSerializer, **CRUD_ERRORS}),
                    partial_update=extend_schema(responses={200: s.ChargerConfigSerializer, **CRUD_ERRORS}),
                    destroy=extend_schema(responses={204: None, **CRUD_ERRORS}))
class ChargerConfigViewSet(AdminViewSet):
    serializer_class = s.ChargerConfigSerializer
    queryset = Charger.objects.all()

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        charger: Charger = serializer.instance  # type: ignore[assignment]
        status_before = charger.registration_status
        super().perform_update(serializer)
        if charger.registration_status != status_before:
            registration_changed(charger_pks=[charger.pk], status=charger.registration_status)


@extend_schema_view(list=extend_schema(responses={200: s.MeterConfigSerializer(many=True), **errors()}),
                    create=extend_schema(responses={201: s.MeterConfigSerializer, **CRUD_ERRORS}),
                    retrieve=extend_schema(responses={200: s.MeterConfigSerializer, **errors(404)}),
                    update=extend_schema(responses={200: s.MeterConfigSerializer, **CRUD_ERRORS}),
                    partial_update=extend_schema(responses={200: s.MeterConfigSerializer, **CRUD_ERRORS}),
                    destroy=extend_schema(responses={204: None, **CRUD_ERRORS}))
class MeterConfigViewSet(AdminViewSet):
    serializer_class = s.MeterConfigSerializer
    queryset = Meter.objects.all()

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        before: Meter = serializer.instance  # type: ignore[assignment]
        old_role, old_zone = before.role, before.zone_id
        old = Meter(pk=before.pk, role=old_role, zone_id=old_zone)
        super().perform_update(serializer)
        if (old_role, old_zone) != (before.role, before.zone_id):
            meter_release_zone(meter=old)

    def perform_destroy(self, instance: Meter) -> None:
        super().perform_destroy(instance)
        meter_release_zone(meter=instance)


@extend_schema_view(list=extend_schema(responses={200: s.BadgeSerializer(many=True), **errors()}),
                    create=extend_schema(responses={201: s.BadgeSerializer, **CRUD_ERRORS}),
                    retrieve=extend_schema(responses={200: s.BadgeSerializer, **errors(404)}),
                    update=extend_schema(responses={200: s.BadgeSerializer, **CRUD_ERRORS}),
                    partial_update=extend_schema(responses={200: s.BadgeSerializer, **CRUD_ERRORS}),
                    destroy=extend_schema(responses={204: None, **CRUD_ERRORS}))
class BadgeViewSet(AdminViewSet):
    """Badges; every change bumps the badge list revision so chargers' local lists follow."""

    serializer_class = s.BadgeSerializer
    queryset = Badge.objects.select_related("group")

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        super().perform_create(serializer)
        badges_changed(now=clock.now())

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        super().perform_update(serializer)
        badges_changed(now=clock.now())

    def perform_destroy(self, instance: Badge) -> None:
        super().perform_destroy(instance)
        badges_changed(now=clock.now())



class NotFoundView(V1View):
    """Every other path under /api/v1/: a JSON 404 (Django's own 404 page is HTML)."""

    write_scope = Scope.READ
    schema = None  # not an operation of the API

    def _not_found(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise Http404("No such API path (see /api/v1/docs/).")

    get = post = put = patch = delete = _not_found
