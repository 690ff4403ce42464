"""The dashboard's live websocket against a real Daphne: roles, Origin, snapshot then deltas."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from ocpp.v16 import call
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from chargers.models import Charger, RegistrationStatus

pytestmark = pytest.mark.slow


def ensure_roles() -> None:
    """The role groups, as the migrations create them: a transactional test's flush removed them."""
    import importlib

    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Permission

    for label in ("badges", "transactions", "dashboard"):
        create_permissions(apps.get_app_config(label), verbosity=0)
    for module, prefix in (("badges.migrations.0003_permission_groups", ""),
                           ("dashboard.migrations.0002_role_permissions", "dashboard.")):
        for name, codes in importlib.import_module(module).ROLES.items():
            group, _ = Group.objects.get_or_create(name=name)
            for code in codes:
                app_label, codename = (prefix + code).split(".")
                group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def session_cookie(role: str | None) -> str:
    """A signed-in session of a staff user in `role` (None: no role at all)."""
    ensure_roles()
    user = User.objects.create_user(f"live-{role}", password="pw", is_staff=True)  # noqa: S106
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def open_live(ocpp_url: str, path: str, cookie: str | None, origin: str | None = "default") -> ClientConnection:
    http = ocpp_url.replace("ws://", "http://")
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else {}
    return connect(f"{ocpp_url}{path}", origin=http if origin == "default" else origin,  # type: ignore[arg-type]
                   additional_headers=headers, open_timeout=10)


def next_update(ws: ClientConnection, timeout_s: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message["type"] == "update":
            return message


def closed_with(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            ws.recv(timeout=10)
    return ws.close_code


@pytest.mark.parametrize("role", [None, "nobody"])
def test_it_closes_the_socket_of_a_user_without_a_role(ocpp_url, role):
    cookie = None if role is None else session_cookie(None)
    ws = open_live(ocpp_url, "/ws/dashboard/site/", cookie)
    assert closed_with(ws) == 4403


def test_it_refuses_a_socket_opened_from_another_site(ocpp_url):
    cookie = session_cookie("viewer")
    with pytest.raises(InvalidStatus):
        open_live(ocpp_url, "/ws/dashboard/site/", cookie, origin="http://evil.example")


def test_it_sends_a_snapshot_then_the_tile_of_a_charger_that_boots(ocpp_url, accepted_charger):
    Charger.objects.create(charge_point_id="CP-OLD", registration_status=RegistrationStatus.ACCEPTED)
    ws = open_live(ocpp_url, "/ws/dashboard/site/", session_cookie("viewer"))
    snapshot = next_update(ws)
    old = Charger.objects.get(charge_point_id="CP-OLD")
    assert {"summary", "zones"} <= set(snapshot["regions"])
    assert f"charger-{old.pk}" in snapshot["items"]

    sim = accepted_charger("CP-NEW")
    new = Charger.objects.get(charge_point_id="CP-NEW")
    update = next_update(ws)
    while f"charger-{new.pk}" not in update.get("items", {}):
        update = next_update(ws)
    assert "online" in update["items"][f"charger-{new.pk}"]
    assert f"charger-{old.pk}" not in update.get("items", {})  # unchanged tiles are not sent again

    sim.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
    update = next_update(ws)
    while "Preparing" not in update.get("items", {}).get(f"charger-{new.pk}", ""):
        update = next_update(ws)
    ws.close()


def test_it_streams_a_charger_page_and_says_when_the_charger_is_gone(ocpp_url):
    charger = Charger.objects.create(charge_point_id="CP-PAGE", registration_status=RegistrationStatus.ACCEPTED)
    ws = open_live(ocpp_url, f"/ws/dashboard/charger/{charger.pk}/", session_cookie("operator"))
    assert "CP-PAGE" in next_update(ws)["regions"]["charger-live"]
    charger.delete()
    assert closed_with(ws) == 4404


def test_the_periodic_recheck_refuses_a_deactivated_user_or_a_removed_role(transactional_db):
    """What the stream re-runs every RECHECK_S: fresh from the database, not the connect-time user."""
    from dashboard.consumers import user_may_view

    session_cookie("viewer")
    user = User.objects.get(username="live-viewer")
    assert user_may_view(user.pk)
    user.groups.clear()
    assert not user_may_view(user.pk)
    user.groups.add(Group.objects.get(name="viewer"))
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert not user_may_view(user.pk)
    assert not user_may_view(None)


def test_the_buttons_a_stream_draws_follow_the_users_role(transactional_db):
    from dashboard.consumers import user_abilities

    session_cookie("viewer")
    user = User.objects.get(username="live-viewer")
    assert user_abilities(user.pk) == {"can_operate": False, "can_configure": False}
    user.groups.add(Group.objects.get(name="operator"))
    assert user_abilities(user.pk) == {"can_operate": True, "can_configure": False}
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert user_abilities(user.pk) == user_abilities(None) == {"can_operate": False, "can_configure": False}


def test_the_charger_page_lists_the_errors_the_charger_reported(ocpp_url, accepted_charger):
    sim = accepted_charger("CP-ERR")
    sim.call(call.StatusNotification(connector_id=1, error_code="GroundFailure", status="Faulted",
                                     vendor_error_code="E42"))
    sim.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
    client = Client()
    client.cookies["sessionid"] = session_cookie("viewer")
    page = client.get(f"/chargers/{Charger.objects.get(charge_point_id='CP-ERR').pk}/").content.decode()
    errors = page[page.index('id="errors"'):page.index('id="configuration"')]
    assert "GroundFailure (E42)" in errors and "Faulted" in errors
    assert "Available" not in errors


def test_a_running_sessions_page_is_live_and_says_when_its_curve_has_new_points(ocpp_url, accepted_charger):
    import datetime as dt

    from tests.ocpp_sim import utc_iso
    from transactions.models import Transaction

    sim = accepted_charger("CP-CURVE")
    now = dt.datetime.now(dt.UTC)
    tx = sim.call(call.StartTransaction(connector_id=1, id_tag="DRIVER", meter_start=0,
                                        timestamp=utc_iso(now - dt.timedelta(minutes=2)))).transaction_id
    client = Client()
    client.cookies["sessionid"] = cookie = session_cookie("viewer")
    assert f'data-live-url="/ws/dashboard/session/{tx}/"' in client.get(f"/sessions/{tx}/").content.decode()
    assert closed_with(open_live(ocpp_url, f"/ws/dashboard/session/{tx}/", session_cookie(None))) == 4403

    ws = open_live(ocpp_url, f"/ws/dashboard/session/{tx}/", cookie)
    snapshot = next_update(ws)
    assert "CP-CURVE" in snapshot["regions"]["session-live"] and snapshot["curve"] == ""  # no sample yet
    sim.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[
        {"timestamp": utc_iso(now), "sampledValue": [
            {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"},
            {"value": "1500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]))
    update = next_update(ws)
    while "curve" not in update:
        update = next_update(ws)
    assert update["curve"] == Transaction.objects.get(pk=tx).last_sample_at.isoformat()
    assert "1.500 kWh" in update["regions"]["session-live"]
    sim.call(call.StopTransaction(meter_stop=1600, timestamp=utc_iso(now), transaction_id=tx, reason="Local"))
    update = next_update(ws)
    while "Completed" not in update.get("regions", {}).get("session-live", ""):
        update = next_update(ws)
    ws.close()
    page = client.get(f"/sessions/{tx}/").content.decode()
    assert "data-live-url" not in page  # a finished session does not change any more
