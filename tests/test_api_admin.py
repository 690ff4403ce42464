"""Integrations in the admin: the token is shown once, works, can be revoked and rotated."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import Client

from api.models import Integration
from tests import api_support
from tests.api_support import Api

pytestmark = pytest.mark.django_db
clock = api_support.clock


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="x-very-long-pw-1"))
    return client


def token_in(response) -> str:
    text = " ".join(str(message) for message in get_messages(response.wsgi_request))
    match = re.search(r"(evce_[\w-]+)", text)
    assert match, text
    return match.group(1)


def test_it_shows_the_new_token_once_and_stores_only_its_hash(admin_client, clock):
    response = admin_client.post("/admin/api/integration/add/", {
        "name": "Siemens Desigo", "scope": "setpoints", "heartbeat_interval_s": 60, "failsafe_min_duration_s": 7200,
    })
    assert response.status_code == 302
    token = token_in(response)
    integration = Integration.objects.get()
    assert token not in (integration.token_hash, integration.token_hint)
    assert Api(token).post("heartbeat").status_code == 200
    admin_client.get(response["Location"])  # the list page shows (and uses up) the message
    edited = admin_client.post(f"/admin/api/integration/{integration.pk}/change/", {
        "name": "Siemens Desigo", "scope": "read", "heartbeat_interval_s": 30, "failsafe_min_duration_s": 600,
    }, follow=True)
    assert edited.status_code == 200
    assert "was changed successfully" in edited.content.decode()
    assert token not in edited.content.decode()  # shown once, at creation (the hint stays)
    assert Api(token).get("heartbeat").json()["heartbeat_interval_s"] == 30  # same token still valid


def test_revoking_and_rotating_tokens(admin_client, clock):
    integration, token = api_support.make_integration()
    response = admin_client.post("/admin/api/integration/", {"action": "rotate_token",
                                                             "_selected_action": [integration.pk]})
    new_token = token_in(response)
    assert Api(token).get("site").status_code == 401
    assert Api(new_token).get("site").status_code == 200
    admin_client.post("/admin/api/integration/", {"action": "revoke", "_selected_action": [integration.pk]})
    assert Api(new_token).get("site").status_code == 401


def test_budget_pages_open(admin_client, clock):
    zone = api_support.make_zone()
    _, token = api_support.make_integration()
    Api(token).put(f"zones/{zone.pk}/setpoint", {"current_a": 20, "duration_s": 60})
    for page in ("/admin/api/zonecontrol/", "/admin/api/setpointrecord/", "/admin/api/integration/"):
        assert admin_client.get(page).status_code == 200
