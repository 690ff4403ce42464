"""What the overview says about a busy site: draws, limits and their reasons, zone bars."""

from __future__ import annotations

import pytest

from dashboard import selectors
from evce import clock
from tests.dashboard_site import busy_site

pytestmark = pytest.mark.django_db


@pytest.fixture
def overview():
    site = busy_site()
    return site, selectors.overview(now=clock.now())


def tile_of(overview: selectors.Overview, cp_id: str) -> selectors.ChargerTile:
    return next(tile for tile in overview.tiles if tile.charge_point_id == cp_id)


def test_it_shows_each_sessions_draw_energy_and_holder(overview):
    _, view = overview
    alice = tile_of(view, "CP-001").connectors[0].session
    assert alice is not None and alice.holder == "Alice Martin" and alice.vip
    assert alice.current_a == (16.0, 16.0, 16.0)
    assert alice.power_w == pytest.approx(16 * 230 * 3)
    assert alice.energy_wh == 12_340
    assert view.charging == 4 and view.online == 5


def test_it_says_why_a_session_is_at_its_limit(overview):
    _, view = overview
    pending = tile_of(view, "CP-002").connectors[0].limit
    assert pending.in_force_a == 16.0 and pending.pending_a == 10.0 and pending.wanted_a == 10.0
    assert pending.reason == "limited by zone:Connection point phase L1; waiting for the charger's answer"
    assert pending.problem == ""
    rejected = tile_of(view, "CP-003").connectors[0].limit
    assert rejected.problem == "Rejected by the charger: charger answered Rejected"
    shed = tile_of(view, "CP-004").connectors[0].limit
    assert shed.reason == "paused (shed); paused until 12:15 (rotation)"


def test_it_shows_an_offline_charger_as_offline_whatever_it_said_last(overview):
    _, view = overview
    offline = tile_of(view, "CP-006")
    assert not offline.online
    assert offline.connectors[0].status == "offline (last: Faulted)" and offline.connectors[0].has_error


def test_it_sums_the_ev_draw_of_each_zone_subtree_per_phase(overview):
    _, view = overview
    zones = {zone.name: zone for zone in view.zones}
    assert [zone.name for zone in view.zones] == ["Connection point", "Level -1", "Level -2"]
    assert [zone.depth for zone in view.zones] == [0, 1, 1]
    level1 = [bar.ev_a for bar in zones["Level -1"].phases]
    assert level1 == pytest.approx([25.8, 25.8, 25.8])
    # CP-004 is single-phase on L2 (it reports "L1"): its draw lands on L2.
    level2 = [bar.ev_a for bar in zones["Level -2"].phases]
    assert level2 == pytest.approx([6.1, 6.1, 6.1])
    root = [bar.ev_a for bar in zones["Connection point"].phases[:3]]
    assert root == pytest.approx([31.9, 31.9, 31.9])
    power = zones["Connection point"].phases[3]  # its 60 kW subscribed demand, as a fourth bar
    assert (power.unit, power.limit_a, power.ev_a) == ("kW", 60.0, pytest.approx(31.9 * 3 * 230 / 1000))
    assert power.headroom_a == pytest.approx(60 - 31.9 * 3 * 230 / 1000)
    assert len(zones["Level -1"].phases) == 3  # no power limit: no power bar
    assert zones["Level -1"].phases[0].headroom_a == pytest.approx(63 - 25.8)


def test_it_explains_where_a_dynamic_zones_capacity_comes_from(overview):
    _, view = overview
    level2 = next(zone for zone in view.zones if zone.name == "Level -2")
    assert "dynamic" in level2.note
    # Building load = measured total − EV draw in the zone, per phase.
    assert [bar.building_a for bar in level2.phases] == pytest.approx([30 - 6.1, 22 - 6.1, 25 - 6.1])


def test_the_overview_page_draws_every_tile_and_zone(client, overview):
    from tests.test_dashboard_live import ensure_roles

    ensure_roles()
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user("v", password="pw", is_staff=True)  # noqa: S106
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)
    page = client.get("/").content.decode()
    for text in ("CP-001", "CP-006", "Alice Martin", "Level -2", "limited by zone:Connection point phase L1",
                 "Rejected by the charger", "paused (shed)", "A free"):
        assert text in page, text
