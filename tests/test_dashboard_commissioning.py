"""The commissioning checklist reads the configuration as it is: each step done or what is missing."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User

from chargers.models import Charger, RegistrationStatus
from dashboard import commissioning
from evce import clock
from loadmgmt.models import Zone, ZoneMode
from tests.dashboard_site import busy_site

pytestmark = pytest.mark.django_db


def by_title(now=None) -> dict[str, commissioning.Step]:
    return {step.title: step for step in commissioning.steps(now or clock.now())}


def test_a_fresh_install_has_everything_to_do():
    steps = by_title()
    assert not steps["Connection point and zones"].done and not steps["Chargers"].done
    assert not steps["Badges"].done
    assert steps["Site policy"].done  # the defaults are a valid policy


def test_it_names_what_is_missing_and_where_to_do_it():
    root = Zone.objects.create(name="Connection point", max_current_a=63)
    Zone.objects.create(name="Board", parent=root, max_current_a=80)
    Zone.objects.create(name="Car park", parent=root, max_current_a=40, mode=ZoneMode.DYNAMIC)
    pending = Charger.objects.create(charge_point_id="CP-NEW", registration_status=RegistrationStatus.PENDING)
    steps = by_title()
    assert any("Board (80 A) is larger than its parent" in p for p in steps["Connection point and zones"].problems)
    assert any("dynamic zone Car park has no consumption meter" in p for p in steps["Meters"].problems)
    assert steps["Chargers"].problems == ["CP-NEW is pending: accept it into a zone"]
    assert ("Accept CP-NEW", f"/chargers/{pending.pk}/") in steps["Chargers"].links


def test_a_commissioned_site_is_complete(client):
    busy_site()
    Zone.objects.filter(mode=ZoneMode.DYNAMIC).update(mode=ZoneMode.STATIC)
    user = User.objects.create_user("installer", password="pw", is_staff=True)  # noqa: S106
    user.groups.add(Group.objects.get(name="admin"))
    client.force_login(user)
    page = client.get("/commissioning/").content.decode()
    assert "complete" in page and "Download a backup" in page


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_only_admins_commission(client, role):
    user = User.objects.create_user(f"c-{role}", password="pw", is_staff=True)  # noqa: S106
    user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    assert client.get("/commissioning/").status_code == 403
