"""Badge CSV import/export: round trip, row errors with line numbers, the management commands."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command

from badges.models import Badge, BadgeGroup, BadgeListRevision, BadgeStatus
from chargers.models import Charger
from loadmgmt.models import Zone

HEADER = "id_tag,holder,email,reference,group,status,valid_from,valid_until,vip,parent_id_tag,chargers,zones\n"


@pytest.fixture
def site(db) -> None:
    acme = BadgeGroup.objects.create(name="Acme")
    BadgeGroup.objects.create(name="Fleet")
    cp1 = Charger.objects.create(charge_point_id="CP-1")
    Charger.objects.create(charge_point_id="CP-2")
    basement = Zone.objects.create(name="Basement, level -1", max_current_a=63)
    alice = Badge.objects.create(
        id_tag="04A1B2C3D4", holder="Alice Martin", email="alice@acme.example", reference="E-1001", group=acme,
        valid_from=dt.datetime(2026, 1, 1, 7, tzinfo=dt.UTC), expires_at=dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
        vip=True, parent_id_tag="ACME",
    )
    alice.chargers.add(cp1)
    alice.zones.add(basement)
    Badge.objects.create(id_tag="bob-card", holder="Bob, \"the\" driver", status=BadgeStatus.BLOCKED)


def export_csv() -> str:
    out = io.StringIO()
    call_command("badges_export", "-", stdout=out)
    return out.getvalue()


def import_csv(tmp_path, text: str, *options: str) -> tuple[str, str]:
    path = tmp_path / "badges.csv"
    path.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    call_command("badges_import", str(path), *options, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_export_then_import_is_the_identity(site, tmp_path):
    exported = export_csv()
    assert exported.splitlines()[0] + "\n" == HEADER
    assert "04A1B2C3D4,Alice Martin,alice@acme.example,E-1001,Acme,accepted,2026-01-01T07:00:00+00:00," in exported
    assert exported.splitlines()[1].endswith(',yes,ACME,CP-1,"Basement, level -1"')
    Badge.objects.all().delete()
    out, _ = import_csv(tmp_path, exported)
    assert "imported 2 new and 0 updated" in out
    assert export_csv() == exported
    alice = Badge.objects.get(id_tag="04A1B2C3D4")
    assert alice.expires_at == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert [c.charge_point_id for c in alice.chargers.all()] == ["CP-1"]


def test_bad_rows_are_reported_by_line_and_nothing_is_written(site, tmp_path):
    revision = BadgeListRevision.load().revision
    text = HEADER + "\n".join([
        "NEW-1,New One,,,Fleet,,,,,,,",
        "new-1,Same tag other case,,,,,,,,,,",
        "NEW-2,,,,Nobody,,,,,,,",
        "NEW-3,,,,,,31/12/2026,,,,,",
        "NEW-4-IS-FAR-TOO-LONG-FOR-OCPP,,,,,,,,,,,",
        "NEW-5,,not-an-email,,,paused,,,maybe,,CP-9,",
    ]) + "\n"
    with pytest.raises(CommandError, match="5 row\\(s\\) with errors .* nothing written"):
        import_csv(tmp_path, text)
    err = io.StringIO()
    with pytest.raises(CommandError):
        path = tmp_path / "badges.csv"
        call_command("badges_import", str(path), stderr=err)
    lines = [line.split(": ", 1)[1] for line in err.getvalue().splitlines()]
    assert lines == [
        "line 3 (new-1): id_tag: duplicate id tag 'new-1' (already on line 2)",
        "line 4 (NEW-2): group: unknown group 'Nobody'",
        "line 5 (NEW-3): valid_from: bad date '31/12/2026' (use YYYY-MM-DD or an ISO 8601 date-time)",
        "line 6 (NEW-4-IS-FAR-TOO-LONG-FOR-OCPP): id_tag: id tag 'NEW-4-IS-FAR-TOO-LONG-FOR-OCPP' is 30 characters "
        "long; OCPP allows at most 20",
        "line 7 (NEW-5): status: status 'paused' is not one of: accepted, blocked; vip: 'maybe' is not yes or no; "
        "chargers: unknown charger 'CP-9'; email: Enter a valid email address.",
    ]
    assert not Badge.objects.filter(id_tag__startswith="NEW").exists()
    assert BadgeListRevision.load().revision == revision


def test_skip_invalid_imports_the_valid_rows_and_lists_the_others(site, tmp_path):
    text = HEADER + "NEW-1,New One,,,Fleet,,2026-03-01,2026-03-31,no,,CP-1|CP-2,\nNEW-2,,,,Nobody,,,,,,,\n"
    out, err = import_csv(tmp_path, text, "--skip-invalid")
    assert "imported 1 new and 0 updated badge(s); 1 row(s) skipped" in out
    assert "line 3 (NEW-2): group: unknown group 'Nobody'" in err
    new = Badge.objects.get(id_tag="NEW-1")
    assert (new.group.name, sorted(c.charge_point_id for c in new.chargers.all())) == ("Fleet", ["CP-1", "CP-2"])
    # A date alone means from the start / until the end of that day (site time zone, UTC here).
    assert (new.valid_from, new.expires_at) == (dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
                                                dt.datetime(2026, 4, 1, tzinfo=dt.UTC))


def test_an_import_updates_known_tags_ignoring_case_and_leaves_missing_columns_alone(site, tmp_path):
    revision = BadgeListRevision.load().revision
    out, _ = import_csv(tmp_path, "id_tag,status\n04a1b2c3d4,blocked\n")
    assert "imported 0 new and 1 updated" in out
    alice = Badge.objects.get(holder="Alice Martin")
    # The same badge (tags ignore case), now spelled as in the file; the other columns are kept.
    assert (alice.id_tag, alice.status, alice.chargers.count()) == ("04a1b2c3d4", "blocked", 1)
    assert BadgeListRevision.load().revision == revision + 1  # local lists will follow


def test_dry_run_and_unknown_columns(site, tmp_path):
    out, _ = import_csv(tmp_path, "id_tag,holder\nNEW-9,Nine\n", "--dry-run")
    assert "would import 1 new" in out
    assert not Badge.objects.filter(id_tag="NEW-9").exists()
    with pytest.raises(CommandError, match="cannot be imported"):
        import_csv(tmp_path, "id_tag,colour\nNEW-9,red\n")
