"""Dashboard roles: every page, download and action, per role, through the Django test client.

Viewers see everything and change nothing; operators also send commands and read charger
configuration; only admins change configuration keys. No OCPP server runs here: commands go
to a charger that is offline, which is enough to prove who gets past the permission check
(a refused request never reaches `send_call`; an allowed one comes back with "offline").
"""

from __future__ import annotations

import logging
from unittest import mock

import pytest
from django.contrib.auth.models import Group, User

from chargers.models import Charger, OcppMessage, RegistrationStatus
from dashboard import commands
from evce import clock
from tests.conftest import wait_until
from transactions.models import Transaction

pytestmark = pytest.mark.django_db

ROLES = ("admin", "operator", "viewer")


@pytest.fixture
def charger() -> Charger:
    record = Charger.objects.create(charge_point_id="CP-ROLE", registration_status=RegistrationStatus.ACCEPTED)
    Transaction.objects.create(charger=record, connector_id=1, id_tag="TAG1", start_time=clock.now())
    OcppMessage.objects.create(timestamp=clock.now(), charge_point_id="CP-ROLE", charger=record, direction="in",
                               action="Heartbeat", payload={})
    return record


def client_as(client, role: str | None):
    if role is not None:
        user = User.objects.create_user(f"u-{role}", password="pw", is_staff=True)  # noqa: S106
        user.groups.add(Group.objects.get(name=role))
        client.force_login(user)
    return client


def read_urls(charger: Charger) -> list[str]:
    tx = Transaction.objects.get(charger=charger)
    return ["/", f"/chargers/{charger.pk}/", "/sessions/", "/sessions.csv", f"/sessions/{tx.pk}/",
            f"/sessions/{tx.pk}/curve.json", "/site-power.json", "/energy.json", "/log/", "/log.csv", "/log.json",
            "/health/"]


def action_posts(charger: Charger) -> list[tuple[str, dict[str, str], str]]:
    """(url, form, least role allowed)."""
    base = f"/chargers/{charger.pk}"
    posts = [(f"{base}/command/", {"command": name, "id_tag": "TAG1", "connector_id": "1", "transaction_id": "1",
                                   "type": "Operative", "requested_message": "Heartbeat",
                                   "location": "https://firmware.example/cp.bin"}, "operator")
             for name in commands.COMMANDS]
    posts.append((f"{base}/configuration/read/", {}, "operator"))
    posts.append((f"{base}/configuration/change/", {"key": "HeartbeatInterval", "value": "60"}, "admin"))
    posts.append((f"{base}/accept/", {"zone": ""}, "admin"))
    tx = Transaction.objects.get(charger=charger)
    posts.append((f"/sessions/{tx.pk}/vip/", {"vip": "1", "next": f"{base}/"}, "operator"))
    return posts


# Roles allowed an action, by the least role that may use it.
ALLOWED = {"operator": {"admin", "operator"}, "admin": {"admin"}}


@pytest.mark.parametrize("role", ROLES)
def test_it_shows_every_page_to_every_role(client, charger, role):
    client = client_as(client, role)
    for url in read_urls(charger):
        response = client.get(url)
        assert response.status_code == 200, f"{role} GET {url}: {response.status_code}"


def test_it_sends_anonymous_users_to_the_login_form(client, charger):
    for url in read_urls(charger):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
    for url, form, _ in action_posts(charger):
        response = client.post(url, form)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url


def test_it_refuses_a_signed_in_user_without_a_role(client, charger):
    user = User.objects.create_user("nobody", password="pw", is_staff=True)  # noqa: S106
    client.force_login(user)
    for url in read_urls(charger):
        assert client.get(url).status_code == 403, url
    for url, form, _ in action_posts(charger):
        assert client.post(url, form).status_code == 403, url


@pytest.mark.parametrize("role", ROLES)
def test_it_lets_each_role_do_only_its_actions(client, charger, role):
    client = client_as(client, role)
    with mock.patch("dashboard.commands.ocpp.send_call",
                    side_effect=commands.ocpp.ChargerOffline("charger 'CP-ROLE' is offline")) as send:
        for url, form, least in action_posts(charger):
            send.reset_mock()
            response = client.post(url, form)
            if role in ALLOWED[least]:
                assert response.status_code == 302, f"{role} POST {url} {form.get('command')}"
                if not url.endswith(("/accept/", "/vip/")):  # the two that do not talk to the charger
                    assert send.called, f"{role} POST {url} {form.get('command')} did not reach the charger"
            else:
                assert response.status_code == 403, f"{role} POST {url} {form.get('command')}: {response.status_code}"
                assert not send.called


def test_it_refuses_get_on_actions(client, charger):
    client = client_as(client, "admin")
    for url, _, _ in action_posts(charger):
        assert client.get(url).status_code == 405, url


def test_it_needs_the_csrf_token_for_actions(charger):
    from django.test import Client

    client = client_as(Client(enforce_csrf_checks=True), "admin")
    with mock.patch("dashboard.commands.ocpp.send_call") as send:
        response = client.post(f"/chargers/{charger.pk}/command/", {"command": "soft_reset"})
    assert response.status_code == 403
    assert not send.called


def test_it_offers_command_buttons_only_to_roles_that_may_use_them(client, charger):
    page = client_as(client, "viewer").get(f"/chargers/{charger.pk}/").content.decode()
    assert "Soft reset" not in page and "not send it commands" in page
    assert "Read from the charger" not in page
    client.logout()
    page = client_as(client, "operator").get(f"/chargers/{charger.pk}/").content.decode()
    assert "Soft reset" in page and "Read from the charger" in page
    assert "configuration/change/" not in page
    client.logout()
    page = client_as(client, "admin").get(f"/chargers/{charger.pk}/").content.decode()
    assert "configuration/change/" in page


@pytest.mark.parametrize("role", ROLES)
def test_it_toggles_vip_on_a_running_session_for_operators_and_admins_only(client, charger, role):
    tx = Transaction.objects.get(charger=charger)
    client = client_as(client, role)
    overview = client.get("/").content.decode()
    assert (f"/sessions/{tx.pk}/vip/" in overview) == (role != "viewer")
    with mock.patch("loadmgmt.tasks.rebalance_soon") as rebalance:
        response = client.post(f"/sessions/{tx.pk}/vip/", {"vip": "1", "next": f"/chargers/{charger.pk}/"})
        if role != "viewer":  # the loop is asked to re-balance at once, from a thread of its own
            wait_until(lambda: rebalance.called)
    tx.refresh_from_db()
    if role == "viewer":
        assert response.status_code == 403 and not tx.vip and not rebalance.called
        return
    assert response.status_code == 302 and response["Location"] == f"/chargers/{charger.pk}/"
    assert tx.vip
    page = client.get(f"/chargers/{charger.pk}/").content.decode()
    assert "Remove VIP" in page and "VIP session (set by an operator)" in page
    response = client.post(f"/sessions/{tx.pk}/vip/", {"vip": "0", "next": "https://evil.example/"})
    tx.refresh_from_db()
    assert not tx.vip and response["Location"] == "/"  # a foreign address is never followed


def test_vip_stays_off_a_stopped_session_and_a_broker_failure_is_only_logged(client, charger, caplog):
    tx = Transaction.objects.get(charger=charger)
    client = client_as(client, "operator")
    with (mock.patch("loadmgmt.tasks.rebalance_soon", side_effect=ConnectionError("broker down")),
          caplog.at_level(logging.WARNING, logger="loadmgmt.tasks")):
        response = client.post(f"/sessions/{tx.pk}/vip/", {"vip": "1"}, follow=True)
        wait_until(lambda: "could not ask for a re-balance (broker down)" in caplog.text)
    tx.refresh_from_db()
    assert tx.vip and "is now VIP" in response.content.decode()
    Transaction.objects.filter(pk=tx.pk).update(state="completed", vip=False)
    response = client.post(f"/sessions/{tx.pk}/vip/", {"vip": "1"}, follow=True)
    tx.refresh_from_db()
    assert not tx.vip and "not running any more" in response.content.decode()


def test_an_admin_accepts_a_discovered_charger_into_a_zone(client):
    from loadmgmt.models import Zone

    zone = Zone.objects.create(name="Level -1", max_current_a=63)
    pending = Charger.objects.create(charge_point_id="CP-NEW", registration_status=RegistrationStatus.PENDING)
    client = client_as(client, "admin")
    assert "Accept into this zone" in client.get(f"/chargers/{pending.pk}/").content.decode()
    response = client.post(f"/chargers/{pending.pk}/accept/", {"zone": str(zone.pk)}, follow=True)
    pending.refresh_from_db()
    assert (pending.registration_status, pending.zone) == (RegistrationStatus.ACCEPTED, zone)
    assert "CP-NEW accepted into zone Level -1" in response.content.decode()


def test_configuration_read_and_change_from_the_dashboard_are_stored_on_the_keys(client, charger):
    """What the charger answers is recorded (chargers.services.configuration_outcomes_record): a
    read stores every key with its read-only flag; a change stores its status, and the value
    only when the charger took it."""
    from chargers.models import ConfigurationKey

    admin = client_as(client, "admin")
    base = f"/chargers/{charger.pk}/configuration"
    read = {"configurationKey": [{"key": "HeartbeatInterval", "value": "300", "readonly": False},
                                 {"key": "NumberOfConnectors", "value": "2", "readonly": True}]}
    with mock.patch("dashboard.commands.ocpp.send_call", return_value=read):
        admin.post(f"{base}/read/")
    with mock.patch("dashboard.commands.ocpp.send_call", return_value={"status": "Accepted"}):
        admin.post(f"{base}/change/", {"key": "HeartbeatInterval", "value": "60"})
    with mock.patch("dashboard.commands.ocpp.send_call", return_value={"status": "Rejected"}):
        admin.post(f"{base}/change/", {"key": "NumberOfConnectors", "value": "4"})
    stored = {row.key: (row.value, row.readonly, row.last_change_status)
              for row in ConfigurationKey.objects.filter(charger=charger)}
    assert stored == {"HeartbeatInterval": ("60", False, "Accepted"), "NumberOfConnectors": ("2", True, "Rejected")}
