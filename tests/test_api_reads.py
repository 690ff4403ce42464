"""Read endpoints of /api/v1/: site tree, chargers with the loop's limits, sessions, meters, energy."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.staticfiles import finders
from django.test import Client

from api.models import Scope
from chargers.models import Charger, Connector, RegistrationStatus
from loadmgmt.models import LimitPurpose, LimitState, TimeOfUseRule
from meters.models import Meter, MeterReading, MeterRole
from tests import api_support
from tests.api_support import T0, Api, make_integration, make_zone
from transactions.models import Transaction, TransactionState

pytestmark = pytest.mark.django_db
clock = api_support.clock


@pytest.fixture
def reader(clock) -> Api:
    return Api(make_integration("Dashboard", scope=Scope.READ)[1])


@pytest.fixture
def site(clock):
    root = make_zone("Connection point", max_current_a=250, max_power_kw=150, mode="dynamic",
                     measured_current_l1_a=120, measured_current_l2_a=90, measured_current_l3_a=100,
                     measured_power_kw=70, measured_at=T0)
    level = make_zone("Level -1", parent=root, max_current_a=125, max_power_kw=None)
    charger = Charger.objects.create(charge_point_id="CP-1", registration_status=RegistrationStatus.ACCEPTED,
                                     connected=True, zone=level)
    Connector.objects.create(charger=charger, connector_id=1, status="Charging", status_at=T0)
    LimitState.objects.create(charger=charger, connector_id=1, purpose=LimitPurpose.TX, transaction_id=7,
                              in_force_a=16, pending_a=20, wanted_a=20, binding="zone:Level -1 phase L1",
                              waiting="raise waits for room", last_status="Accepted")
    sessions = [
        Transaction.objects.create(charger=charger, connector_id=1, id_tag="BADGE1", start_time=T0
                                   - dt.timedelta(days=d), stop_time=T0 - dt.timedelta(days=d, hours=-1),
                                   energy_wh=10_000 + d, state=TransactionState.COMPLETED)
        for d in range(1, 6)
    ]
    active = Transaction.objects.create(charger=charger, connector_id=1, id_tag="BADGE2", start_time=T0,
                                        state=TransactionState.ACTIVE)
    meter = Meter.objects.create(name="Main", host="192.0.2.10", role=MeterRole.ZONE_TOTAL, zone=root,
                                 last_reading_at=T0, last_values={"power_w": 70000.0}, stale=False)
    for minute in range(3):
        MeterReading.objects.create(meter=meter, start=T0 - dt.timedelta(minutes=minute), samples=12,
                                    power_w=70000.0 + minute)
    return {"root": root, "level": level, "charger": charger, "sessions": sessions, "active": active,
            "meter": meter}


def test_the_site_shows_the_zone_tree_with_limits_load_and_headroom(reader, site):
    body = reader.get("site").json()
    assert body["active_sessions"] == 1 and body["chargers_connected"] == 1
    zones = {zone["name"]: zone for zone in body["zones"]}
    root = zones["Connection point"]
    assert root["measured_current_a"] == [120, 90, 100]
    assert (root["headroom_a"], root["headroom_kw"]) == (130, 80)
    assert root["control"]["source"] == "configured"
    assert zones["Level -1"]["parent"] == site["root"].pk


def test_a_zone_budget_lowers_the_limit_and_headroom_it_reports(clock, site):
    _, token = make_integration("BMS")
    Api(token).put(f"zones/{site['root'].pk}/setpoint", {"current_a": 150, "duration_s": 600})
    zone = Api(token).get(f"zones/{site['root'].pk}").json()
    assert (zone["limit_current_a"], zone["headroom_a"]) == (150, 30)
    assert zone["control"]["source"] == "setpoint"


def test_chargers_show_connectors_and_the_loops_limits(reader, site):
    [charger] = reader.get("chargers").json()
    assert charger["connected"] is True
    assert charger["connectors"][0]["status"] == "Charging"
    limit = charger["limits"][0]
    assert (limit["in_force_a"], limit["pending_a"], limit["wanted_a"]) == (16, 20, 20)
    assert limit["binding"] == "zone:Level -1 phase L1"
    assert reader.get("chargers/CP-1").json()["charge_point_id"] == "CP-1"
    assert reader.get("chargers/NOPE").status_code == 404


def test_sessions_are_paged_with_a_cursor_and_filtered(reader, site):
    first = reader.get("sessions?page_size=2").json()
    assert [s["id"] for s in first["results"]] == [site["active"].pk, site["sessions"][0].pk]
    second = reader.client.get(first["next"], **reader.headers).json()
    assert [s["id"] for s in second["results"]] == [site["sessions"][1].pk, site["sessions"][2].pk]
    completed = reader.get("sessions?state=completed&from=2026-01-02&to=2026-01-03").json()["results"]
    assert {s["energy_wh"] for s in completed} == {10_002, 10_003}
    assert reader.get("sessions?id_tag=badge2").json()["results"][0]["state"] == "active"
    assert reader.get("sessions?charger=OTHER").json()["results"] == []
    assert reader.get("sessions?from=2026-01-05&to=2026-01-01").status_code == 400
    assert reader.get("sessions?state=bogus").status_code == 400
    assert reader.get("sessions?from=yesterday").status_code == 400


def test_active_sessions(reader, site):
    assert [s["id_tag"] for s in reader.get("sessions/active").json()] == ["BADGE2"]


def test_energy_per_day_and_month(reader, site):
    days = reader.get("energy?kind=day&from=2026-01-01&to=2026-01-05").json()
    assert [row["period"] for row in days] == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]
    months = reader.get("energy?kind=month").json()
    assert {row["period"]: row["sessions"] for row in months} == {"2025-12": 1, "2026-01": 5}
    assert reader.get("energy?kind=year").status_code == 400


def test_meters_with_latest_readings_and_history(reader, site):
    [meter] = reader.get("meters").json()
    assert meter["last_values"] == {"power_w": 70000.0} and meter["stale"] is False
    history = reader.get(f"meters/{site['meter'].pk}/history?page_size=2").json()
    assert [row["power_w"] for row in history["results"]] == [70000.0, 70001.0]
    assert history["next"]
    assert reader.get("meters/999/history").status_code == 404


def test_anonymous_callers_get_401_and_staff_sessions_read(site):
    assert Api().get("site").status_code == 401
    client = Client()
    client.force_login(User.objects.create(username="viewer", is_staff=True))
    assert client.get("/api/v1/site").status_code == 200
    assert client.post("/api/v1/heartbeat").status_code == 403  # read scope
    driver = Client()
    driver.force_login(User.objects.create(username="driver"))
    assert driver.get("/api/v1/site").status_code == 403


def test_staff_roles_map_to_scopes(site, clock):
    operator = User.objects.create(username="op", is_staff=True)
    operator.groups.add(Group.objects.get_or_create(name="operator")[0])
    client = Client()
    client.force_login(operator)
    assert client.post("/api/v1/config/zones", {"name": "X", "max_current_a": 10},
                       content_type="application/json").status_code == 403
    # Commands scope: the call goes through to the (offline) charger.
    response = client.post("/api/v1/chargers/CP-1/reset", {"type": "Soft"}, content_type="application/json")
    assert response.status_code == 409


def test_a_revoked_token_is_refused(site, clock):
    integration, token = make_integration("Old", scope=Scope.READ)
    assert Api(token).get("site").status_code == 200
    integration.revoked_at = clock.now
    integration.save()
    assert Api(token).get("site").status_code == 401


def test_the_schema_and_the_docs_are_served_without_the_internet(reader, site):
    schema = reader.get("schema/?format=json")
    assert schema.status_code == 200
    assert "/api/v1/zones/{zone_id}/setpoint" in schema.json()["paths"]
    assert schema.json()["paths"]["/api/zones/{zone_id}/measurement"]["post"]["deprecated"] is True
    docs = reader.get("docs/").content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist" in docs
    assert "cdn." not in docs.lower() and "https://" not in docs and "http://" not in docs  # (not a nonce's letters)
    assets = re.findall(r'/static/(drf_spectacular_sidecar/[^"\']+)', docs)
    assert len(assets) >= 2
    for asset in assets:  # every file the page loads is vendored
        assert finders.find(asset), asset


def test_an_active_time_of_use_rule_lowers_the_limit_and_is_named(reader, site):
    TimeOfUseRule.objects.create(zone=site["root"], label="peak", weekdays="0", start_time=dt.time(11),
                                 end_time=dt.time(13), limit_percent=50)  # T0 is a Monday, 12:00
    zone = reader.get(f"zones/{site['root'].pk}").json()
    assert (zone["time_of_use"], zone["limit_current_a"], zone["limit_power_kw"]) == ("peak", 125, 75)
    assert zone["headroom_a"] == 5
    assert reader.get(f"zones/{site['level'].pk}").json()["time_of_use"] == ""
