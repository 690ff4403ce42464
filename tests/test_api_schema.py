"""schemathesis over the v1 OpenAPI schema, in process: no 5xx, every response as documented.

The schema is generated the way ``/api/v1/schema/`` serves it; cases run against the Django WSGI
handler with an admin token (every operation allowed) on a small site, so that valid ids exist
next to random ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.core.serializers.json import DjangoJSONEncoder
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings

from api.models import Scope
from badges.models import Badge
from chargers.models import Charger, Connector, RegistrationStatus
from tests.api_support import make_integration, make_zone

GENERATED = SchemaGenerator().get_schema(request=None, public=True)
RAW_SCHEMA: dict = json.loads(json.dumps(GENERATED, cls=DjangoJSONEncoder))
schema = schemathesis.openapi.from_dict(RAW_SCHEMA)
schema.app = WSGIHandler()


@pytest.fixture
def admin_token(db, settings_override: None) -> str:
    zone = make_zone("Root")
    make_zone("Child", parent=zone, max_current_a=32)
    charger = Charger.objects.create(charge_point_id="CP-1", registration_status=RegistrationStatus.ACCEPTED,
                                     zone=zone)
    Connector.objects.create(charger=charger, connector_id=1, status="Available")
    Badge.objects.create(id_tag="TAG1")
    return make_integration("Fuzzer", scope=Scope.ADMIN, allow_permanent_setpoints=True)[1]


@pytest.fixture
def settings_override(settings: pytest.FixtureRequest) -> Iterator[None]:
    settings.API_WRITES_PER_MINUTE = 1_000_000  # the fuzzer writes fast; throttling has its own test
    settings.ALLOWED_HOSTS = ["*"]
    # Like Django's test client: a request must not close the test's database connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def test_the_served_schema_is_the_one_tested(admin_token: str) -> None:
    from django.test import Client

    served = Client().get("/api/v1/schema/?format=json", HTTP_AUTHORIZATION=f"Bearer {admin_token}").json()
    assert served["paths"].keys() == RAW_SCHEMA["paths"].keys()


@schema.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_api_answers_every_generated_call_as_documented(case: schemathesis.Case, admin_token: str) -> None:
    # What is checked: no 5xx, documented status codes, content types, headers and bodies.
    # Not checked: that schema-valid data is accepted (it may still be refused on meaning: an
    # unknown badge group, a loop in the zone tree, a setpoint in the past), nor that every
    # schema-invalid value is refused (DRF coerces 1 into "1" and "1.5" into 1.5, on purpose).
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_token}"}, excluded_checks=[
        schemathesis.checks.positive_data_acceptance, schemathesis.checks.negative_data_rejection])
