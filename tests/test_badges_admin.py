"""Badges in the admin through the Django test client: CSV import preview, export, roles."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile

from badges.models import Badge, BadgeGroup, BadgeListRevision, BadgeStatus
from badges.resources import COLUMNS

IMPORT_URL = "/admin/badges/badge/import/"
CONFIRM_URL = "/admin/badges/badge/process_import/"
LIST_URL = "/admin/badges/badge/"


def user_in(role: str) -> User:
    """A staff user in one of the groups created by the badges.0003 migration."""
    user = User.objects.create_user(role, password="pw", is_staff=True)  # noqa: S106
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def as_role(db, client):
    def login(role: str):
        client.force_login(user_in(role))
        return client
    return login


def upload(client, text: str, *, skip_invalid: bool = False):
    data = {"import_file": SimpleUploadedFile("badges.csv", text.encode()), "format": "0", "resource": "0"}
    if skip_invalid:
        data["skip_invalid"] = "on"
    return client.post(IMPORT_URL, data)


def confirm(client, preview) -> object:
    form = preview.context["confirm_form"]
    return client.post(CONFIRM_URL, {name: form.initial.get(name, "") for name in form.fields})


def test_an_import_is_previewed_then_confirmed(as_role):
    client = as_role("admin")
    BadgeGroup.objects.create(name="Acme")
    Badge.objects.create(id_tag="OLD-1", holder="Before")
    preview = upload(client, "id_tag,holder,group\nNEW-1,Nina,Acme\nold-1,After,\n")
    assert preview.status_code == 200
    result = preview.context["result"]
    assert [row.import_type for row in result.valid_rows()] == ["new", "update"]
    assert not Badge.objects.filter(id_tag="NEW-1").exists()  # a dry run
    response = confirm(client, preview)
    assert response.status_code == 302
    assert Badge.objects.get(id_tag="NEW-1").group.name == "Acme"
    assert Badge.objects.get(id_tag="old-1").holder == "After"


def test_a_file_with_errors_shows_its_lines_and_cannot_be_confirmed(as_role):
    client = as_role("admin")
    preview = upload(client, "id_tag,group,valid_until\nNEW-1,,\nNEW-2,Nobody,\nNEW-3,,tomorrow\n")
    assert preview.context.get("confirm_form") is None
    page = preview.content.decode()
    assert "<td>3</td><td>NEW-2</td>" in page and "unknown group &#x27;Nobody&#x27;" in page
    assert "<td>4</td><td>NEW-3</td>" in page and "bad date &#x27;tomorrow&#x27;" in page
    assert not Badge.objects.exists()


def test_valid_rows_only_when_asked(as_role):
    client = as_role("admin")
    preview = upload(client, "id_tag,group\nNEW-1,\nNEW-2,Nobody\n", skip_invalid=True)
    page = preview.content.decode()
    assert 'id="badge-import-skipped"' in page and "<td>3</td><td>NEW-2</td>" in page
    assert confirm(client, preview).status_code == 302
    assert list(Badge.objects.values_list("id_tag", flat=True)) == ["NEW-1"]


def test_export_follows_the_list_filters(as_role):
    Badge.objects.create(id_tag="OPEN", holder="Olive")
    Badge.objects.create(id_tag="SHUT", holder="Sam", status=BadgeStatus.BLOCKED)
    client = as_role("viewer")
    columns = {f"badgeresource_{column}": "on" for column in COLUMNS}
    response = client.post("/admin/badges/badge/export/?status__exact=blocked",
                           {"format": "0", "resource": "0", **columns})
    assert response.status_code == 200
    lines = response.content.decode().splitlines()
    assert lines[0].startswith("id_tag,holder,") and len(lines) == 2 and lines[1].startswith("SHUT,Sam,")


def test_an_operator_may_only_block_and_unblock(as_role):
    badge = Badge.objects.create(id_tag="TAG-1", holder="Tess")
    revision = BadgeListRevision.load().revision
    client = as_role("operator")
    assert client.get(LIST_URL).status_code == 200
    response = client.post(LIST_URL, {"action": "block_badges", "_selected_action": [badge.pk]})
    assert response.status_code == 302
    assert Badge.objects.get(pk=badge.pk).status == BadgeStatus.BLOCKED
    assert BadgeListRevision.load().revision == revision + 1
    assert client.post(f"{LIST_URL}{badge.pk}/change/", {"id_tag": "TAG-1", "holder": "Other",
                                                          "status": "accepted"}).status_code == 403
    assert client.get(f"{LIST_URL}add/").status_code == 403
    assert client.get(IMPORT_URL).status_code == 403
    assert client.post(f"{LIST_URL}{badge.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Badge.objects.get(pk=badge.pk).holder == "Tess"


def test_a_viewer_reads_but_cannot_block(as_role):
    badge = Badge.objects.create(id_tag="TAG-1")
    client = as_role("viewer")
    assert client.get(f"{LIST_URL}{badge.pk}/change/").status_code == 200
    client.post(LIST_URL, {"action": "block_badges", "_selected_action": [badge.pk]})
    assert Badge.objects.get(pk=badge.pk).status == BadgeStatus.ACCEPTED
    assert client.get(IMPORT_URL).status_code == 403
    assert client.get("/admin/transactions/transaction/").status_code == 200


def test_an_admin_manages_badges_and_their_changes_reach_the_lists(as_role):
    client = as_role("admin")
    revision = BadgeListRevision.load().revision
    response = client.post(f"{LIST_URL}add/", {"id_tag": "NEW-1", "holder": "Nina", "status": "accepted"})
    assert response.status_code == 302
    assert BadgeListRevision.load().revision == revision + 1
    duplicate = client.post(f"{LIST_URL}add/", {"id_tag": "new-1", "status": "accepted"})
    assert duplicate.status_code == 200
    assert "already exists (id tags ignore case)" in duplicate.content.decode()
