"""Writes of /api/v1/: measurements, remote commands, badges and site configuration, throttling."""

from __future__ import annotations

import pytest
from django.test import override_settings

from api.models import Scope
from badges.models import Badge, BadgeListRevision
from chargers import commands
from chargers.models import Charger, RegistrationStatus
from loadmgmt.models import Zone
from meters.models import Meter
from tests import api_support
from tests.api_support import Api, make_integration, make_zone

pytestmark = pytest.mark.django_db
clock = api_support.clock


@pytest.fixture
def admin(clock) -> Api:
    return Api(make_integration("Installer", scope=Scope.ADMIN)[1])


@pytest.fixture
def bems(clock) -> Api:
    return Api(make_integration("BMS", scope=Scope.SETPOINTS)[1])


# --- measurements --------------------------------------------------------------------------------
def test_a_pushed_measurement_is_stored_and_an_older_one_never_overwrites_it(bems):
    zone = make_zone(mode="dynamic")
    response = bems.post(f"zones/{zone.pk}/measurement", {"current_a": [40, 30, 20], "power_kw": 20,
                                                          "at": "2026-01-05T11:59:59Z"})
    assert response.json()["stored"] is True
    older = bems.post(f"zones/{zone.pk}/measurement", {"power_kw": 99, "at": "2026-01-05T11:59:00Z"})
    assert older.status_code == 200 and older.json()["stored"] is False
    zone.refresh_from_db()
    assert (zone.measured_current_l1_a, zone.measured_power_kw) == (40, 20)


@pytest.mark.parametrize(("body", "field"), [
    ({"pv_power_kw": 3}, "current_a"),
    ({"current_a": [1, 2]}, "current_a"),
    ({"power_kw": 1, "at": "2026-01-05T13:00:00Z"}, "at"),
    ({"power_kw": "x"}, "power_kw"),
])
def test_bad_measurements_get_400_per_field(bems, body, field):
    zone = make_zone()
    response = bems.post(f"zones/{zone.pk}/measurement", body)
    assert response.status_code == 400 and field in response.json()


def test_a_read_token_may_not_push_measurements(clock):
    zone = make_zone()
    reader = Api(make_integration("Reader", scope=Scope.READ)[1])
    assert reader.post(f"zones/{zone.pk}/measurement", {"power_kw": 1}).status_code == 403


# --- commands ------------------------------------------------------------------------------------
@pytest.fixture
def online(clock) -> Charger:
    return Charger.objects.create(charge_point_id="CP-9", registration_status=RegistrationStatus.ACCEPTED,
                                  connected=True, channel_name="specific.test!abc")


@pytest.fixture
def operator(clock) -> Api:
    return Api(make_integration("Support", scope=Scope.COMMANDS)[1])


def test_commands_are_sent_as_ocpp_calls(operator, online, monkeypatch):
    sent = []

    def fake_send(cp_id, action, payload, **_):
        sent.append((cp_id, action, payload))
        return {"status": "Unlocked"} if action == "UnlockConnector" else {"status": "Accepted"}

    monkeypatch.setattr(commands, "send_call", fake_send)
    assert operator.post("chargers/CP-9/start", {"id_tag": "BADGE1", "connector_id": 1}).json()["status"] == "Accepted"
    assert operator.post("chargers/CP-9/stop", {"transaction_id": 12}).status_code == 200
    assert operator.post("chargers/CP-9/reset", {"type": "Hard"}).status_code == 200
    assert operator.post("chargers/CP-9/unlock", {"connector_id": 2}).json()["status"] == "Unlocked"
    assert sent == [("CP-9", "RemoteStartTransaction", {"idTag": "BADGE1", "connectorId": 1}),
                    ("CP-9", "RemoteStopTransaction", {"transactionId": 12}),
                    ("CP-9", "Reset", {"type": "Hard"}), ("CP-9", "UnlockConnector", {"connectorId": 2})]


@pytest.mark.parametrize(("outcome", "code", "text"), [
    (commands.ChargerTimeout("charger 'CP-9' did not answer Reset within 30 s"), 504, "did not answer"),
    (commands.ChargerCallError("NotSupported", "no reset here"), 502, "CALLERROR"),
    (commands.ChargerOffline("charger 'CP-9' disconnected before answering Reset"), 409, "disconnected"),
    ({"status": "Rejected"}, 409, "Rejected"),
])
def test_command_failures_are_explained(operator, online, monkeypatch, outcome, code, text):
    def fake_send(*_, **__):
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(commands, "send_call", fake_send)
    response = operator.post("chargers/CP-9/reset", {"type": "Soft"})
    assert response.status_code == code
    assert text in response.json()["detail"]


def test_commands_check_scope_charger_and_payload(operator, bems, online):
    Charger.objects.filter(pk=online.pk).update(connected=False)
    assert operator.post("chargers/CP-9/reset", {}).status_code == 409  # offline
    assert operator.post("chargers/NOPE/reset", {}).status_code == 404
    assert operator.post("chargers/CP-9/start", {}).json() == {"id_tag": ["This field is required."]}
    assert operator.post("chargers/CP-9/reset", {"type": "Gentle"}).status_code == 400
    assert bems.post("chargers/CP-9/reset", {}).status_code == 403


# --- configuration and badges (admin scope) -------------------------------------------------------
def test_a_registration_changed_through_the_api_is_told_to_the_connected_charger(admin, monkeypatch):
    import api.v1

    told = []
    monkeypatch.setattr(api.v1, "registration_changed", lambda **kwargs: told.append(kwargs))
    charger = Charger.objects.create(charge_point_id="CP-API", registration_status=RegistrationStatus.ACCEPTED)
    assert admin.patch(f"config/chargers/{charger.pk}", {"registration_status": "rejected"}).status_code == 200
    assert told == [{"charger_pks": [charger.pk], "status": "rejected"}]
    assert admin.patch(f"config/chargers/{charger.pk}", {"notes": "unchanged status"}).status_code == 200
    assert len(told) == 1


def test_an_installer_scripts_a_commissioning(admin):
    root = admin.post("config/zones", {"name": "Main", "max_current_a": 250, "max_power_kw": 150}).json()
    level = admin.post("config/zones", {"name": "Level -1", "parent": root["id"], "max_current_a": 125}).json()
    charger = admin.post("config/chargers", {"charge_point_id": "CP-100", "zone": level["id"], "phases": 1,
                                             "supply_phase": 2, "registration_status": "accepted"})
    assert charger.status_code == 201, charger.json()
    meter = admin.post("config/meters", {"name": "Main meter", "host": "192.0.2.1", "role": "zone_total",
                                         "zone": root["id"]})
    assert meter.status_code == 201, meter.json()
    assert admin.patch(f"config/zones/{level['id']}", {"max_current_a": 100}).json()["max_current_a"] == 100
    assert Charger.objects.get(charge_point_id="CP-100").zone_id == level["id"]
    assert Meter.objects.get(name="Main meter").zone_id == root["id"]


def test_configuration_errors_are_400_and_conflicts_409(admin):
    no_limit = admin.post("config/zones", {"name": "Nothing"})
    assert no_limit.status_code == 400
    assert no_limit.json() == {"non_field_errors": ["Give the zone a maximum current per phase, a maximum power, "
                                                    "or both."]}
    zone = make_zone("Board")
    Charger.objects.create(charge_point_id="CP-1", zone=zone)
    loop = admin.patch(f"config/zones/{zone.pk}", {"parent": zone.pk})
    assert loop.status_code == 400 and "parent" in loop.json()
    in_use = admin.delete(f"config/zones/{zone.pk}")
    assert in_use.status_code == 409 and "CP-1" in in_use.json()["detail"]
    assert Zone.objects.filter(pk=zone.pk).exists()
    assert admin.post("config/zones", {"name": "Board", "max_current_a": 10}).status_code == 400  # unique name
    assert admin.get("config/zones/99999").status_code == 404


def test_badges_crud_bumps_the_local_list_revision(admin):
    before = BadgeListRevision.load().revision
    created = admin.post("badges", {"id_tag": "04A1B2", "holder": "Alice", "valid_until": "2026-12-31T23:59:59Z"})
    assert created.status_code == 201, created.json()
    assert admin.post("badges", {"id_tag": "04a1b2"}).status_code == 409  # id tags ignore case
    badge_id = created.json()["id"]
    assert admin.patch(f"badges/{badge_id}", {"status": "blocked"}).json()["status"] == "blocked"
    assert admin.post("badges", {"id_tag": "bad tag é"}).status_code == 400
    assert admin.delete(f"badges/{badge_id}").status_code == 204
    assert not Badge.objects.exists()
    assert BadgeListRevision.load().revision == before + 3


def test_configuration_needs_the_admin_scope(bems, operator):
    assert bems.post("config/zones", {"name": "X", "max_current_a": 10}).status_code == 403
    assert operator.post("badges", {"id_tag": "X1"}).status_code == 403
    assert operator.get("badges").status_code == 200  # reads are open to every scope


@override_settings(API_WRITES_PER_MINUTE=3)
def test_writes_are_throttled_per_integration(bems, clock):
    zone = make_zone()
    codes = [bems.post(f"zones/{zone.pk}/measurement", {"power_kw": 1}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert bems.get("site").status_code == 200  # reads are not throttled
    other = Api(make_integration("Other", scope=Scope.SETPOINTS)[1])
    assert other.post(f"zones/{zone.pk}/measurement", {"power_kw": 1}).status_code == 200
    clock.advance(61)
    assert bems.post(f"zones/{zone.pk}/measurement", {"power_kw": 1}).status_code == 200
