"""The admin is the configuration UI: every page loads, validations speak clearly, actions work."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from chargers.models import Charger, OcppMessage, RegistrationStatus
from chargers.services import chargers_mark_silent_offline, message_log, message_log_prune
from loadmgmt.models import MAX_ZONE_DEPTH, Zone

pytestmark = pytest.mark.django_db

MODELS = [
    "chargers/charger", "chargers/connector", "chargers/ocppmessage", "chargers/autoconfigurationkey",
    "chargers/configurationkey", "badges/badge", "transactions/transaction", "transactions/metersample",
    "loadmgmt/zone", "loadmgmt/sitesettings", "loadmgmt/setpoint", "loadmgmt/limitstate",
]


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "", "a-long-password")
    client.force_login(user)
    return client


@pytest.mark.parametrize("model", MODELS)
def test_every_changelist_loads(admin_client, model):
    Charger.objects.create(charge_point_id="CP-ADMIN")
    response = admin_client.get(f"/admin/{model}/", secure=True)
    assert response.status_code == 200


def test_nothing_is_open_to_an_anonymous_user(client):
    for path in ["/admin/", "/admin/chargers/charger/"]:
        response = client.get(path, secure=True)
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]


def test_accepting_a_pending_charger_is_one_action(admin_client):
    charger = Charger.objects.create(charge_point_id="CP-WAIT")
    response = admin_client.post(reverse("admin:chargers_charger_changelist"),
                                 {"action": "accept_chargers", "_selected_action": [charger.pk]}, secure=True)
    assert response.status_code == 302
    charger.refresh_from_db()
    assert charger.registration_status == RegistrationStatus.ACCEPTED


def test_the_charger_password_is_stored_hashed(admin_client):
    charger = Charger.objects.create(charge_point_id="CP-PW")
    url = reverse("admin:chargers_charger_change", args=[charger.pk])
    data = {"registration_status": "accepted", "heartbeat_interval_s": 300, "rated_max_current_a": 32, "phases": 3,
            "supply_phase": 1, "min_current_a": 6, "new_password": "s3cret-passw0rd", "notes": "",
            "connectors-TOTAL_FORMS": 0, "connectors-INITIAL_FORMS": 0,
            "configuration-TOTAL_FORMS": 0, "configuration-INITIAL_FORMS": 0,
            "limit_states-TOTAL_FORMS": 0, "limit_states-INITIAL_FORMS": 0}
    response = admin_client.post(url, data, secure=True)
    assert response.status_code == 302, response.content.decode()[:2000]
    charger.refresh_from_db()
    assert charger.password_hash and "s3cret" not in charger.password_hash
    assert charger.check_password("s3cret-passw0rd")


def zone_form(name: str, parent: Zone | None, **extra) -> dict:
    data = {"name": name, "parent": parent.pk if parent else "", "mode": "static", "max_current_a": 63,
            "pv_phases": "123",
            "time_of_use-TOTAL_FORMS": 0, "time_of_use-INITIAL_FORMS": 0}
    data.update(extra)
    return data


def test_the_zone_tree_depth_is_limited_with_a_clear_error(admin_client):
    parent = None
    for level in range(MAX_ZONE_DEPTH):
        parent = Zone.objects.create(name=f"L{level}", parent=parent, max_current_a=63)
    response = admin_client.post(reverse("admin:loadmgmt_zone_add"), zone_form("Too deep", parent), secure=True)
    assert response.status_code == 200
    assert f"at most {MAX_ZONE_DEPTH} levels" in response.content.decode()
    assert not Zone.objects.filter(name="Too deep").exists()


def test_a_zone_needs_a_limit(admin_client):
    response = admin_client.post(reverse("admin:loadmgmt_zone_add"),
                                 zone_form("No limit", None, max_current_a=""), secure=True)
    assert "Give the zone a maximum current per phase" in response.content.decode()


def test_a_dynamic_zone_without_a_fallback_uses_the_sites():
    from evce import clock
    from loadmgmt.inputs import gather
    from loadmgmt.models import SiteSettings

    SiteSettings.objects.update_or_create(pk=1, defaults={"fallback_current_a": 12})
    Zone.objects.create(name="Dyn", mode="dynamic", max_current_a=63)
    capacity = gather(clock.now()).zones[0]
    assert capacity.fallback
    assert capacity.zone.capacity_a == (12, 12, 12)


def test_time_of_use_rules_are_validated(admin_client):
    data = zone_form("Peak zone", None, **{
        "time_of_use-TOTAL_FORMS": 1, "time_of_use-0-label": "peak", "time_of_use-0-weekdays": "0,1,9",
        "time_of_use-0-start_time": "17:00", "time_of_use-0-end_time": "20:00", "time_of_use-0-limit_percent": 50})
    response = admin_client.post(reverse("admin:loadmgmt_zone_add"), data, secure=True)
    assert "Use numbers 0 (Monday) to 6 (Sunday)" in response.content.decode()
    data["time_of_use-0-weekdays"] = "0,1,2,3,4"
    response = admin_client.post(reverse("admin:loadmgmt_zone_add"), data, secure=True)
    assert response.status_code == 302
    assert Zone.objects.get(name="Peak zone").time_of_use.get().weekday_set() == frozenset(range(5))


def test_a_zone_cannot_be_its_own_ancestor(admin_client):
    root = Zone.objects.create(name="Root", max_current_a=63)
    child = Zone.objects.create(name="Child", parent=root, max_current_a=32)
    url = reverse("admin:loadmgmt_zone_change", args=[root.pk])
    response = admin_client.post(url, zone_form("Root", child), secure=True)
    assert "loop in the zone tree" in response.content.decode()


def test_silent_chargers_are_marked_offline():
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    Charger.objects.create(charge_point_id="CP-QUIET", connected=True, channel_name="x", heartbeat_interval_s=60,
                           last_seen=now - dt.timedelta(minutes=5))
    Charger.objects.create(charge_point_id="CP-CHATTY", connected=True, channel_name="y", heartbeat_interval_s=60,
                           last_seen=now - dt.timedelta(seconds=30))
    assert chargers_mark_silent_offline(now=now) == ["CP-QUIET"]
    assert not Charger.objects.get(charge_point_id="CP-QUIET").connected


def test_the_message_log_is_bounded(settings):
    settings.OCPP_LOG_MAX_ROWS = 5
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    message_log(charge_point_id="CP", charger_pk=None, direction="in", now=now - dt.timedelta(days=90))
    for _ in range(8):
        message_log(charge_point_id="CP", charger_pk=None, direction="in", now=now)
    message_log_prune(now=now)  # the count cap may have done part of the work already
    assert OcppMessage.objects.count() == 5
    assert not OcppMessage.objects.filter(timestamp__lt=now).exists()


def test_a_restart_shows_no_charger_online():
    from django.core.management import call_command

    Charger.objects.create(charge_point_id="CP-GHOST", connected=True, channel_name="gone")
    call_command("ocpp_reset_connections", stdout=None)
    ghost = Charger.objects.get(charge_point_id="CP-GHOST")
    assert (ghost.connected, ghost.channel_name) == (False, "")


def test_setpoint_history_is_pruned_after_the_retention():
    from loadmgmt.models import Setpoint, SiteSettings
    from loadmgmt.services import setpoints_prune

    charger = Charger.objects.create(charge_point_id="CP-HIST")
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    SiteSettings.objects.update_or_create(pk=1, defaults={"setpoint_retention_days": 7})
    for age in (1, 6, 8, 30):
        Setpoint.objects.create(timestamp=now - dt.timedelta(days=age), charger=charger, connector_id=1, limit_a=6)
    assert setpoints_prune(now=now) == 2
    assert Setpoint.objects.count() == 2
