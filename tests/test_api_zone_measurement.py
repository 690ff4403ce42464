"""POST /api/zones/<id>/measurement: a BEMS pushes a zone's consumption through the same service."""

from __future__ import annotations

import base64
import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from loadmgmt.models import Zone
from tests.meters_lab import at, dynamic_zone

pytestmark = pytest.mark.django_db


@pytest.fixture
def zone() -> Zone:
    return dynamic_zone()


@pytest.fixture
def staff_client(monkeypatch) -> Client:
    monkeypatch.setattr("evce.clock.now", lambda: at(0))
    client = Client()
    client.force_login(bems_user("bems"))
    return client


def bems_user(username: str, password: str | None = None) -> User:
    """A staff account allowed to push: it holds loadmgmt.change_zone."""
    user = User.objects.create_user(username, password=password, is_staff=True)
    user.user_permissions.add(Permission.objects.get(content_type__app_label="loadmgmt", codename="change_zone"))
    return user


def push(client: Client, zone: Zone, body: object, **headers: str):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(f"/api/zones/{zone.pk}/measurement", data, content_type="application/json", **headers)


def test_it_stores_a_pushed_measurement(staff_client, zone):
    response = push(staff_client, zone, {"current_a": [40, 30.5, 20], "power_kw": 18.2, "pv_power_kw": 3,
                                         "at": "2026-01-05T11:59:58Z"})
    assert response.status_code == 200
    assert response.json()["stored"] is True
    zone.refresh_from_db()
    assert (zone.measured_current_l1_a, zone.measured_current_l2_a, zone.measured_current_l3_a) == (40, 30.5, 20)
    assert (zone.measured_power_kw, zone.pv_power_kw, zone.measured_at) == (18.2, 3.0, at(-2))


def test_an_older_push_is_ignored_and_said_so(staff_client, zone):
    push(staff_client, zone, {"power_kw": 10})
    response = push(staff_client, zone, {"power_kw": 99, "at": "2026-01-05T11:59:00Z"})
    assert response.json()["stored"] is False
    zone.refresh_from_db()
    assert (zone.measured_power_kw, zone.measured_at) == (10, at(0))


@pytest.mark.parametrize(("body", "message"), [
    ({"pv_power_kw": 3}, "Give current_a (three per-phase values, A) and/or power_kw."),
    ({"current_a": [40, 30]}, "Ensure this field has at least 3 elements."),
    ({"current_a": [40, None, 20]}, "This field may not be null."),
    ({"current_a": [40, "NaN", 20]}, "A valid number is required."),
    ({"current_a": [-1, 0, 0]}, "Ensure this value is greater than or equal to 0."),
    ({"power_kw": "12 kW"}, "A valid number is required."),
    ({"power_kw": 1, "at": "2026-01-05T12:05:00Z"}, "is in the future"),
    ('{"power_kw": NaN}', "JSON parse error"),
])
def test_bad_payloads_get_400_with_a_message(staff_client, zone, body, message):
    response = push(staff_client, zone, body)
    assert response.status_code == 400
    assert message in json.dumps(response.json())
    zone.refresh_from_db()
    assert zone.measured_at is None


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_only_staff_may_push(zone):
    User.objects.create_user("driver", password="not-a-staff-pw-1")
    User.objects.create_user("viewer", password="viewer-pw-8f2k1", is_staff=True)
    bems_user("bems", "bems-pw-8f2k1")
    assert push(Client(), zone, {"power_kw": 1}, HTTP_AUTHORIZATION=basic("driver", "not-a-staff-pw-1")
                ).status_code == 403
    assert push(Client(), zone, {"power_kw": 1}).status_code in (401, 403)
    assert push(Client(), zone, {"power_kw": 1}, HTTP_AUTHORIZATION=basic("viewer", "viewer-pw-8f2k1")
                ).status_code == 403  # staff, but without the right to change zones
    assert push(Client(), zone, {"power_kw": 1}, HTTP_AUTHORIZATION=basic("bems", "bems-pw-8f2k1")).status_code == 200


def test_an_unknown_zone_is_404(staff_client, zone):
    assert staff_client.post("/api/zones/999999/measurement", {"power_kw": 1},
                             content_type="application/json").status_code == 404
