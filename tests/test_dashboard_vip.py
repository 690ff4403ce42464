"""An operator's VIP toggle on the dashboard reaches the control loop: the session is served first."""

from __future__ import annotations

from unittest import mock

from django.contrib.auth.models import Group, User
from ocpp.v16 import call

from badges.models import Badge
from chargers.models import Charger, RegistrationStatus
from loadmgmt.models import SiteSettings, Zone
from tests.conftest import wait_until
from tests.loop_helpers import settle
from tests.ocpp_sim import utc_iso
from tests.test_dashboard_live import ensure_roles
from transactions.models import Transaction


def test_an_operator_makes_a_running_session_vip_and_the_loop_serves_it_first(ocpp_url, charger_factory, client):
    zone = Zone.objects.create(name="Visitors", max_current_a=40)
    settings = SiteSettings.load()
    settings.allocation_mode, settings.min_on_s, settings.min_off_s = "priority", 0, 0
    settings.save()
    sims = []
    for cp_id, tag in (("CP-GUEST", "GUEST"), ("CP-STAFF", "STAFF")):
        Badge.objects.create(id_tag=tag)
        Charger.objects.create(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED, zone=zone)
        sim = charger_factory(ocpp_url, cp_id).connect()
        sim.boot()
        sim.call(call.StartTransaction(connector_id=1, id_tag=tag, meter_start=0, timestamp=utc_iso()))
        sims.append(sim)
    settle()
    assert [sim.last_tx_limit() for sim in sims] == [20.0, 20.0]  # nobody is VIP: equal shares
    ensure_roles()  # a transactional test's flush removed the groups the migrations made
    operator = User.objects.create_user("op", password="pw", is_staff=True)  # noqa: S106
    operator.groups.add(Group.objects.get(name="operator"))
    client.force_login(operator)
    guest = Transaction.objects.get(charger__charge_point_id="CP-GUEST")
    with mock.patch("loadmgmt.tasks.rebalance_soon") as rebalance:  # no worker here: the test ticks itself
        response = client.post(f"/sessions/{guest.pk}/vip/", {"vip": "1"})
        wait_until(lambda: rebalance.called)  # asked from the re-balance requests' thread
    assert response.status_code == 302
    settle()
    assert [sim.last_tx_limit() for sim in sims] == [32.0, 8.0]  # the VIP gets its rating, the other the rest
    client.post(f"/sessions/{guest.pk}/vip/", {"vip": "0"})
    settle()
    assert [sim.last_tx_limit() for sim in sims] == [20.0, 20.0]
