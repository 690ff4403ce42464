"""Zone setpoints with expiry, the heartbeat watchdog and the failsafe, seen by the control loop.

Every scenario is checked through ``api.budgets.active_zone_budgets`` (what the loop reads at
each tick) with a clock the test moves by hand.
"""

from __future__ import annotations

import pytest

from api.budgets import active_zone_budgets
from api.models import Scope, SetpointRecord
from loadmgmt.models import SiteSettings
from tests import api_support
from tests.api_support import Api, Clock, make_integration, make_zone

pytestmark = pytest.mark.django_db
clock = api_support.clock


@pytest.fixture
def zone():
    return make_zone()


@pytest.fixture
def bems(clock: Clock):
    integration, token = make_integration()
    return integration, Api(token)


def budget(zone, clock: Clock):
    return active_zone_budgets([zone.pk], clock.now).get(zone.pk)


def test_it_puts_a_setpoint_in_force_until_it_expires(bems, zone, clock):
    _, api = bems
    response = api.put(f"zones/{zone.pk}/setpoint", {"current_a": 40, "power_kw": 25, "duration_s": 600})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["in_force"]["source"] == "setpoint"
    assert body["in_force"]["current_a"] == 40
    assert body["valid_until"] == "2026-01-05T12:10:00Z"
    in_force = budget(zone, clock)
    assert (in_force.current_a, in_force.power_kw, in_force.source) == (40, 25, "setpoint")
    assert "Siemens Desigo" in in_force.note
    for _ in range(9):  # heartbeats keep the watchdog happy; the setpoint still ends on time
        clock.advance(60)
        assert api.post("heartbeat").status_code == 200
    assert budget(zone, clock).source == "setpoint"
    clock.advance(60)
    assert budget(zone, clock) is None
    read_back = api.get(f"zones/{zone.pk}/setpoint").json()["in_force"]
    assert read_back["source"] == "expired"
    assert read_back["since"] == "2026-01-05T12:10:00Z"


def test_a_setpoint_without_expiry_is_refused_unless_the_token_allows_it(bems, zone, clock):
    _, api = bems
    response = api.put(f"zones/{zone.pk}/setpoint", {"current_a": 40})
    assert response.status_code == 400
    assert "valid_until" in response.json()
    assert budget(zone, clock) is None
    _, token = make_integration("Permanent BMS", allow_permanent_setpoints=True, heartbeat_interval_s=86400)
    other_zone = make_zone("Level 2")
    assert Api(token).put(f"zones/{other_zone.pk}/setpoint", {"current_a": 40}).status_code == 200
    for _ in range(30):  # a permanent setpoint lasts as long as the heartbeat does
        clock.advance(86400)
        Api(token).post("heartbeat")
    assert budget(other_zone, clock).source == "setpoint"
    clock.advance(2 * 86400 + 1)
    assert budget(other_zone, clock).source == "failsafe"


@pytest.mark.parametrize(("body", "field"), [
    ({"duration_s": 60}, "current_a"),
    ({"current_a": -1, "duration_s": 60}, "current_a"),
    ({"current_a": 10, "duration_s": 0}, "duration_s"),
    ({"current_a": 10, "duration_s": 60, "valid_until": "2026-01-05T13:00:00Z"}, "duration_s"),
    ({"current_a": 10, "valid_until": "2026-01-05T11:00:00Z"}, "valid_until"),
    ({"current_a": 10, "valid_until": "2026-02-05T11:00:00Z"}, "valid_until"),
    ({"current_a": "lots", "duration_s": 60}, "current_a"),
    ({"power_kw": 1e9, "duration_s": 60}, "power_kw"),
])
def test_bad_setpoints_get_a_message_on_the_field(bems, zone, clock, body, field):
    response = bems[1].put(f"zones/{zone.pk}/setpoint", body)
    assert response.status_code == 400
    assert field in response.json()


def test_a_setpoint_never_raises_a_zone_above_its_configured_limits(bems, zone, clock):
    bems[1].put(f"zones/{zone.pk}/setpoint", {"current_a": 400, "power_kw": 600, "duration_s": 600})
    in_force = budget(zone, clock)
    assert (in_force.current_a, in_force.power_kw) == (100, 60)
    assert "capped" in in_force.note


def test_heartbeat_loss_gives_the_failsafe_for_the_minimum_duration_and_until_a_new_setpoint(bems, zone, clock):
    integration, api = bems
    api.put(f"zones/{zone.pk}/setpoint", {"current_a": 80, "valid_until": "2026-01-05T20:00:00Z"})
    clock.advance(120)  # exactly 2 × 60 s after the last sign of life: not lost yet
    assert budget(zone, clock).source == "setpoint"
    clock.advance(1)
    lost = budget(zone, clock)
    assert (lost.source, lost.current_a) == ("failsafe", 16.0)  # the zone's fallback
    assert lost.since.isoformat() == "2026-01-05T12:02:00+00:00"
    read_back = api.get(f"zones/{zone.pk}/setpoint").json()["in_force"]
    assert read_back["source"] == "failsafe" and read_back["until"] == "2026-01-05T14:02:00Z"

    clock.advance(600)  # the heartbeat is back, but no new setpoint: still failsafe
    assert api.post("heartbeat").status_code == 200
    assert budget(zone, clock).source == "failsafe"
    # A new setpoint before the failsafe minimum waits for it.
    api.put(f"zones/{zone.pk}/setpoint", {"current_a": 70, "valid_until": "2026-01-05T20:00:00Z"})
    assert budget(zone, clock).source == "failsafe"
    assert "waits" in budget(zone, clock).note
    while clock.now.isoformat() < "2026-01-05T14:02:00+00:00":
        clock.advance(50)
        api.post("heartbeat")
    recovered = budget(zone, clock)
    assert (recovered.source, recovered.current_a) == ("setpoint", 70)
    assert api.get(f"zones/{zone.pk}/setpoint").json()["in_force"]["source"] == "setpoint"


def test_heartbeat_back_after_the_minimum_still_needs_a_new_setpoint(bems, zone, clock):
    _, api = bems
    api.put(f"zones/{zone.pk}/setpoint", {"current_a": 80, "valid_until": "2026-01-05T20:00:00Z"})
    clock.advance(3 * 3600)
    assert budget(zone, clock).source == "failsafe"
    api.post("heartbeat")
    assert budget(zone, clock).source == "failsafe"  # the old setpoint does not come back by itself
    api.put(f"zones/{zone.pk}/setpoint", {"current_a": 50, "duration_s": 600})
    assert (budget(zone, clock).source, budget(zone, clock).current_a) == ("setpoint", 50)


def test_the_failsafe_limit_and_minimum_are_the_integrations(zone, clock):
    _, token = make_integration("PLC", failsafe_current_a=25, failsafe_power_kw=12, failsafe_min_duration_s=600,
                                heartbeat_interval_s=10)
    api = Api(token)
    api.put(f"zones/{zone.pk}/setpoint", {"current_a": 80, "duration_s": 3600})
    clock.advance(21)
    lost = budget(zone, clock)
    assert (lost.source, lost.current_a, lost.power_kw) == ("failsafe", 25, 12)
    api.post("heartbeat")
    api.put(f"zones/{zone.pk}/setpoint", {"current_a": 60, "duration_s": 3600})
    for _ in range(59):  # to 611 s: heartbeats every 10 s
        clock.advance(10)
        api.post("heartbeat")
    assert budget(zone, clock).source == "failsafe"  # lost at 20 s, minimum 600 s
    clock.advance(9)
    assert budget(zone, clock).source == "setpoint"


def test_a_zone_without_its_own_fallback_fails_safe_to_the_sites(bems, clock):
    SiteSettings.objects.update_or_create(pk=1, defaults={"fallback_current_a": 9.0})
    zone = make_zone("Board", fallback_current_a=None)
    bems[1].put(f"zones/{zone.pk}/setpoint", {"current_a": 80, "duration_s": 3600})
    clock.advance(600)
    assert budget(zone, clock).current_a == 9.0


def test_an_expired_setpoint_still_falls_back_to_failsafe_when_the_heartbeat_is_lost(bems, zone, clock):
    bems[1].put(f"zones/{zone.pk}/setpoint", {"current_a": 80, "duration_s": 60})
    clock.advance(90)
    assert budget(zone, clock) is None
    clock.advance(60)
    assert budget(zone, clock).source == "failsafe"


def test_releasing_a_zone_gives_back_the_configured_limits_but_not_during_failsafe(bems, zone, clock):
    _, api = bems
    api.put(f"zones/{zone.pk}/setpoint", {"current_a": 80, "duration_s": 3600})
    assert api.delete(f"zones/{zone.pk}/setpoint").status_code == 204
    assert budget(zone, clock) is None
    assert api.get(f"zones/{zone.pk}/setpoint").json()["in_force"]["source"] == "configured"
    api.put(f"zones/{zone.pk}/setpoint", {"current_a": 80, "duration_s": 3600})
    clock.advance(300)
    response = api.delete(f"zones/{zone.pk}/setpoint")
    assert response.status_code == 409
    assert "failsafe" in response.json()["detail"]
    assert budget(zone, clock).source == "failsafe"
    assert SetpointRecord.objects.filter(zone=zone).count() == 3


def test_a_zone_budgeted_by_one_integration_is_a_conflict_for_another(bems, zone, clock):
    bems[1].put(f"zones/{zone.pk}/setpoint", {"current_a": 80, "duration_s": 3600})
    _, token = make_integration("Other BMS")
    response = Api(token).put(f"zones/{zone.pk}/setpoint", {"current_a": 10, "duration_s": 3600})
    assert response.status_code == 409
    assert budget(zone, clock).current_a == 80


def test_setpoints_need_an_integration_with_the_setpoints_scope(zone, clock):
    _, read_token = make_integration("Reader", scope=Scope.READ)
    response = Api(read_token).put(f"zones/{zone.pk}/setpoint", {"current_a": 10, "duration_s": 60})
    assert response.status_code == 403
    assert "setpoints" in response.json()["detail"]
    assert Api().put(f"zones/{zone.pk}/setpoint", {"current_a": 10, "duration_s": 60}).status_code == 401
    assert Api("evce_wrong").put(f"zones/{zone.pk}/setpoint", {"current_a": 10, "duration_s": 60}).status_code == 401
    assert Api(read_token).get(f"zones/{zone.pk}/setpoint").status_code == 200


def test_a_setpoint_for_an_unknown_zone_is_404(bems, clock):
    assert bems[1].put("zones/999999/setpoint", {"current_a": 10, "duration_s": 60}).status_code == 404


def test_budgets_for_the_loop_take_two_queries(bems, clock, django_assert_max_num_queries):
    zones = [make_zone(f"Zone {i}") for i in range(10)]
    for zone in zones:
        bems[1].put(f"zones/{zone.pk}/setpoint", {"current_a": 30, "duration_s": 600})
    SiteSettings.load()
    with django_assert_max_num_queries(2):
        budgets = active_zone_budgets([z.pk for z in zones], clock.now)
    assert len(budgets) == 10
