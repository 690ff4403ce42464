"""Session history, site aggregates, CSV exports and per-badge statements."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command

from badges.models import Badge, BadgeGroup
from chargers.models import Charger, RegistrationStatus
from transactions import services
from transactions.models import Transaction
from transactions.selectors import Period, site_aggregate, transactions_history

NOVEMBER = Period.of_days(dt.date(2026, 11, 1), dt.date(2026, 11, 30))


def session(charger: Charger, id_tag: str, start: dt.datetime, minutes: int, wh: int) -> int:
    tx = services.transaction_start(charger=charger, connector_id=1, id_tag=id_tag, meter_start_wh=100_000,
                                    timestamp=start, reservation_id=None, now=start).transaction_id
    stop = start + dt.timedelta(minutes=minutes)
    services.meter_values_record(charger=charger, connector_id=1, transaction_id=tx, meter_values=[
        {"timestamp": stop.isoformat(), "sampledValue": [{"value": "11000", "measurand": "Power.Active.Import"}]}])
    services.transaction_stop(charger=charger, transaction_id=tx, meter_stop_wh=100_000 + wh, timestamp=stop,
                              reason="Local", id_tag=None, transaction_data=[], now=stop)
    return tx


@pytest.fixture
def history(db) -> dict[str, int]:
    acme = BadgeGroup.objects.create(name="Acme")
    Badge.objects.create(id_tag="ANN", holder="Ann Lee", group=acme)
    Badge.objects.create(id_tag="BEN", holder="Ben Ode")
    r1, r2 = (Charger.objects.create(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED)
              for cp_id in ("CP-R1", "CP-R2"))
    day = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    return {
        "ann-1": session(r1, "ANN", day + dt.timedelta(hours=8), 60, 10_000),
        "ann-2": session(r2, "ann", day + dt.timedelta(hours=20), 120, 5_000),
        "ben": session(r1, "BEN", day + dt.timedelta(days=1, hours=10), 30, 2_000),
        "ghost": session(r2, "GHOST", day + dt.timedelta(days=2, hours=9), 15, 500),
        "ann-dec": session(r1, "ANN", dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC), 15, 1_000),
    }


def rows(kind: str, period: Period = NOVEMBER) -> list[tuple]:
    return [tuple(row.values()) for row in site_aggregate(kind, transactions_history(period=period))]


def test_site_aggregates_per_day_month_badge_and_charger(history):
    assert rows("day") == [("2026-11-03", 2, 15.0, 3.0), ("2026-11-04", 1, 2.0, 0.5), ("2026-11-05", 1, 0.5, 0.25)]
    both_months = Period.of_days(dt.date(2026, 11, 1), dt.date(2026, 12, 31))
    assert rows("month", both_months) == [("2026-11", 4, 17.5, 3.75), ("2026-12", 1, 1.0, 0.25)]
    assert rows("badge") == [("ANN", "Ann Lee", "Acme", 2, 15.0, 3.0), ("BEN", "Ben Ode", "", 1, 2.0, 0.5),
                             ("GHOST", "", "", 1, 0.5, 0.25)]
    assert rows("charger") == [("CP-R1", 2, 12.0, 1.5), ("CP-R2", 2, 5.5, 2.25)]


def test_history_filters(history):
    acme = BadgeGroup.objects.get(name="Acme")
    assert transactions_history(period=NOVEMBER, group_pk=acme.pk).count() == 2
    assert transactions_history(holder="ben").get().pk == history["ben"]
    assert transactions_history(charger_pk=Charger.objects.get(charge_point_id="CP-R2").pk).count() == 2


def test_the_statement_command_writes_sessions_and_totals(history):
    out = io.StringIO()
    call_command("badge_statement", "ann", "--from", "2026-11-01", "--to", "2026-11-30", stdout=out)
    table = list(csv.reader(io.StringIO(out.getvalue())))
    assert table[0] == ["id_tag", "holder", "transaction", "charger", "connector_id", "start_time", "stop_time",
                        "duration_min", "energy_kwh", "stop_reason"]
    assert [row[2:4] + row[7:9] for row in table[1:3]] == [[str(history["ann-1"]), "CP-R1", "60.0", "10.000"],
                                                           [str(history["ann-2"]), "CP-R2", "120.0", "5.000"]]
    assert table[3][2:4] == ["TOTAL", "2 sessions"] and table[3][7:9] == ["180.0", "15.000"]
    with pytest.raises(CommandError, match="no badge"):
        call_command("badge_statement", "NOBODY", "--from", "2026-11-01", "--to", "2026-11-30")


def test_the_export_command(history, tmp_path):
    target = tmp_path / "out.csv"
    call_command("transactions_export", str(target), "--kind", "sessions", "--badge", "ANN", "--from", "2026-11-01",
                 "--to", "2026-11-30", stderr=io.StringIO())
    table = list(csv.DictReader(target.open()))
    assert [row["transaction"] for row in table] == [str(history["ann-1"]), str(history["ann-2"])]
    assert (table[0]["energy_kwh"], table[0]["duration_min"], table[0]["average_power_kw"],
            table[0]["peak_power_kw"], table[0]["holder"], table[0]["group"]) == (
        "10.000", "60.0", "10.00", "11.00", "Ann Lee", "Acme")
    out = io.StringIO()
    call_command("transactions_export", "-", "--kind", "meter-values", "--transaction", str(history["ben"]), stdout=out)
    assert list(csv.DictReader(io.StringIO(out.getvalue())))[0]["measurand"] == "Power.Active.Import"


@pytest.fixture
def staff(client, db):
    def login(role: str):
        user = User.objects.create_user(role, password="pw", is_staff=True)  # noqa: S106
        user.groups.add(Group.objects.get(name=role))
        client.force_login(user)
        return client
    return login


@pytest.mark.parametrize(("role", "status"), [("admin", 200), ("operator", 200), ("viewer", 403)])
def test_statements_are_for_admins_and_operators(history, staff, role, status):
    badge = Badge.objects.get(id_tag="ANN")
    client = staff(role)
    response = client.get(f"/admin/badges/badge/{badge.pk}/statement/?first_day=2026-11-01&last_day=2026-11-30")
    assert response.status_code == status
    if status == 200:
        assert response["Content-Type"].startswith("text/csv")
        assert "TOTAL,2 sessions" in response.content.decode()


def test_the_admin_history_report_and_exports(history, staff):
    client = staff("viewer")
    acme = BadgeGroup.objects.get(name="Acme")
    listing = client.get(f"/admin/transactions/transaction/?badge__group__id__exact={acme.pk}"
                         "&start_time__year=2026&start_time__month=11")
    assert listing.context["cl"].result_count == 2
    report = client.get("/admin/transactions/transaction/report/?kind=charger&first_day=2026-11-01"
                        "&last_day=2026-11-30")
    assert report.content.decode().splitlines() == ["charger,sessions,energy_kwh,duration_h", "CP-R1,2,12.0,1.5",
                                                    "CP-R2,2,5.5,2.25"]
    page = client.get(f"/admin/transactions/transaction/{history['ann-1']}/change/")
    assert page.status_code == 200 and "meter-values.csv" in page.content.decode()
    assert client.get("/admin/transactions/transaction/?period=last_month&q=ann").status_code == 200
    assert client.get("/admin/badges/localliststate/").status_code == 200
    samples = client.get(f"/admin/transactions/transaction/{history['ann-1']}/meter-values.csv")
    assert samples.content.decode().splitlines()[0].startswith("timestamp,transaction,charger,connector_id,measurand")
    columns = {f"transactionresource_{name}": "on" for name in ("transaction", "charger", "energy_kwh")}
    exported = client.post("/admin/transactions/transaction/export/?charger__id__exact="
                            f"{Charger.objects.get(charge_point_id='CP-R2').pk}",
                            {"format": "0", "resource": "0", **columns})
    assert sorted(exported.content.decode().splitlines()) == sorted([
        "transaction,charger,energy_kwh", f"{history['ann-2']},CP-R2,5.000", f"{history['ghost']},CP-R2,0.500"])
    assert Transaction.objects.count() == 5
