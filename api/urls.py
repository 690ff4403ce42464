"""/api/: the versioned BEMS API (v1) and the deprecated pre-v1 measurement push."""

from django.urls import include, path, re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from api import v1
from api.auth import AUTHENTICATION, HasScope
from api.views import ZoneMeasurementSerializer, ZoneMeasurementView

# The pre-v1 push stays in the schema, marked deprecated (its module belongs to the old API).
extend_schema_view(post=extend_schema(
    deprecated=True, request=ZoneMeasurementSerializer, operation_id="legacy_zone_measurement",
    responses={code: OpenApiTypes.OBJECT for code in (200, 400, 401, 403, 404)},
    summary="Deprecated: push a zone measurement (staff account); use /api/v1/zones/{zone_id}/measurement",
))(ZoneMeasurementView)


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema, for any caller with at least the read scope."""

    authentication_classes = AUTHENTICATION
    permission_classes = [HasScope]


class DocsView(SpectacularSwaggerView):
    """Swagger UI (vendored files): for staff sessions and tokens, like the rest of the API."""

    authentication_classes = AUTHENTICATION
    permission_classes = [HasScope]


router = SimpleRouter(trailing_slash=False)
router.register("config/zones", v1.ZoneConfigViewSet, basename="config-zone")
router.register("config/chargers", v1.ChargerConfigViewSet, basename="config-charger")
router.register("config/meters", v1.MeterConfigViewSet, basename="config-meter")
router.register("badges", v1.BadgeViewSet, basename="badge")

v1_patterns = [
    path("schema/", SchemaView.as_view(), name="api-v1-schema"),
    path("docs/", DocsView.as_view(url_name="api-v1-schema"), name="api-v1-docs"),
    path("site", v1.SiteView.as_view(), name="api-v1-site"),
    path("zones", v1.ZoneListView.as_view(), name="api-v1-zones"),
    path("zones/<int:zone_id>", v1.ZoneDetailView.as_view(), name="api-v1-zone"),
    path("zones/<int:zone_id>/setpoint", v1.ZoneSetpointView.as_view(), name="api-v1-zone-setpoint"),
    path("zones/<int:zone_id>/measurement", v1.ZoneMeasurementView.as_view(), name="api-v1-zone-measurement"),
    path("heartbeat", v1.HeartbeatView.as_view(), name="api-v1-heartbeat"),
    path("chargers", v1.ChargerListView.as_view(), name="api-v1-chargers"),
    path("chargers/<str:charge_point_id>", v1.ChargerDetailView.as_view(), name="api-v1-charger"),
    *[path(f"chargers/<str:charge_point_id>/{command}", v1._command_view(command).as_view(),
           name=f"api-v1-charger-{command}") for command in v1.COMMANDS],
    path("sessions", v1.SessionListView.as_view(), name="api-v1-sessions"),
    path("sessions/active", v1.ActiveSessionListView.as_view(), name="api-v1-sessions-active"),
    path("energy", v1.EnergyView.as_view(), name="api-v1-energy"),
    path("meters", v1.MeterListView.as_view(), name="api-v1-meters"),
    path("meters/<int:meter_id>/history", v1.MeterHistoryView.as_view(), name="api-v1-meter-history"),
    *router.urls,
]

urlpatterns = [
    path("v1/", include(v1_patterns)),
    # Deprecated: use POST /api/v1/zones/<id>/measurement (kept for existing BEMS scripts).
    path("zones/<int:zone_id>/measurement", ZoneMeasurementView.as_view(), name="api-zone-measurement"),
    re_path(r"^", v1.NotFoundView.as_view()),  # last: ids that do not match a converter, unknown paths: JSON 404
]
