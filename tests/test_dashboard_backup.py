"""Configuration backup and restore: round trip, all or nothing, a report, admins only."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile

from badges.models import Badge
from chargers.models import Charger
from dashboard import backup
from evce import clock
from loadmgmt.models import TimeOfUseRule, Zone
from tests.dashboard_site import busy_site

pytestmark = pytest.mark.django_db


def as_role(client, role: str):
    user = User.objects.create_user(f"b-{role}", password="pw", is_staff=True)  # noqa: S106
    user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    return client


def upload(client, document: object, *, check_only: bool = False):
    data = {"backup": SimpleUploadedFile("backup.json", json.dumps(document).encode())}
    if check_only:
        data["check_only"] = "1"
    return client.post("/backup/", data)


@pytest.fixture
def saved():
    site = busy_site()
    TimeOfUseRule.objects.create(zone=site.root, start_time="17:00", end_time="20:00", limit_percent=50)
    Badge.objects.get(id_tag="ALICE").chargers.set([site.chargers["CP-001"]])
    return site, backup.backup(now=clock.now())


def test_a_backup_holds_the_configuration_not_the_measurements(saved):
    _, document = saved
    assert document["counts"]["loadmgmt.zone"] == 3 and document["counts"]["chargers.charger"] == 6
    zone = next(o for o in document["objects"] if o["model"] == "loadmgmt.zone" and o["fields"]["name"] == "Level -2")
    assert zone["fields"]["mode"] == "dynamic" and "measured_at" not in zone["fields"]
    charger = next(o for o in document["objects"] if o["model"] == "chargers.charger")
    assert "connected" not in charger["fields"] and "zone" in charger["fields"]
    json.dumps(document)  # plain JSON all the way down


def test_a_restore_puts_the_configuration_back(client, saved):
    site, document = saved
    Zone.objects.filter(pk=site.level1.pk).update(max_current_a=10)
    Charger.objects.filter(pk=site.chargers["CP-002"].pk).update(vip=True, zone=None)
    Badge.objects.filter(id_tag="BOB").delete()
    response = upload(as_role(client, "admin"), document)
    assert response.status_code == 200 and "Restored" in response.content.decode()
    assert Zone.objects.get(pk=site.level1.pk).max_current_a == 63
    restored = Charger.objects.get(pk=site.chargers["CP-002"].pk)
    assert (restored.vip, restored.zone_id, restored.connected) == (False, site.level1.pk, True)  # state kept
    assert Badge.objects.get(id_tag="BOB").holder == "Bob Durand"
    assert list(Badge.objects.get(id_tag="ALICE").chargers.all()) == [site.chargers["CP-001"]]
    assert Zone.objects.get(pk=site.level2.pk).measured_at is not None  # measurements untouched
    Zone.objects.create(name="After restore", max_current_a=16)  # ids keep working (sequences reset)


def test_one_bad_object_and_nothing_is_written(client, saved):
    site, document = saved
    Zone.objects.filter(pk=site.level1.pk).update(max_current_a=10)
    for entry in document["objects"]:
        if entry["model"] == "chargers.charger" and entry["fields"]["charge_point_id"] == "CP-003":
            entry["fields"]["min_current_a"] = 2  # below IEC 61851's 6 A
        if entry["model"] == "badges.badge" and entry["fields"]["id_tag"] == "BOB":
            entry["fields"]["id_tag"] = "ÉTÉ"  # not printable ASCII
    page = upload(as_role(client, "admin"), document).content.decode()
    assert "Nothing restored: 2 problems" in page
    assert "min_current_a" in page and "printable ASCII" in page
    assert Zone.objects.get(pk=site.level1.pk).max_current_a == 10  # the valid zone was not written either


def test_check_only_writes_nothing(client, saved):
    site, document = saved
    Zone.objects.filter(pk=site.level1.pk).update(max_current_a=10)
    page = upload(as_role(client, "admin"), document, check_only=True).content.decode()
    assert "The backup is valid" in page and "3 zones to update" in page
    assert Zone.objects.get(pk=site.level1.pk).max_current_a == 10


@pytest.mark.parametrize("document", [{"format": "something else"}, {"format": backup.FORMAT, "version": 99},
                                      {"format": backup.FORMAT, "version": 1, "objects": [{"model": "auth.user"}]}])
def test_it_refuses_what_is_not_a_backup_it_can_read(client, document):
    response = upload(as_role(client, "admin"), document)
    assert response.status_code == 400 and "Nothing restored" in response.content.decode()


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_only_admins_back_up_and_restore(client, saved, role):
    client = as_role(client, role)
    assert client.get("/backup/").status_code == 403
    assert client.get("/backup.json").status_code == 403
    assert upload(client, saved[1]).status_code == 403
