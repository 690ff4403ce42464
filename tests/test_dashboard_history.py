"""Sessions list filters and CSV, chart data, OCPP log filters and downloads, health checks."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from badges.models import Badge, BadgeGroup
from chargers.models import Charger, OcppMessage, RegistrationStatus
from dashboard import history, maintenance
from evce import clock
from tests.dashboard_site import busy_site
from transactions.models import Transaction, TransactionState

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(client):
    user = User.objects.create_user("viewer1", password="pw", is_staff=True)  # noqa: S106
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)
    return client


def test_the_sessions_csv_follows_the_filters(viewer):
    site = busy_site()
    acme = BadgeGroup.objects.create(name="Acme")
    Badge.objects.filter(id_tag="BOB").update(group=acme)
    Transaction.objects.filter(pk=site.sessions["CP-004"].pk).update(state=TransactionState.COMPLETED)
    rows = list(csv.DictReader(io.StringIO(viewer.get("/sessions.csv").content.decode())))
    assert len(rows) == 4
    by_group = list(csv.DictReader(io.StringIO(viewer.get(f"/sessions.csv?group={acme.pk}").content.decode())))
    assert [row["holder"] for row in by_group] == ["Bob Durand"]
    by_holder = viewer.get("/sessions/?badge=alice").content.decode()
    assert "Alice Martin" in by_holder and "Bob Durand" not in by_holder
    completed = list(csv.DictReader(io.StringIO(viewer.get("/sessions.csv?state=completed").content.decode())))
    assert [row["charger"] for row in completed] == ["CP-004"]
    today = clock.now().date()
    future = (today + dt.timedelta(days=2)).isoformat()
    assert "No session matches" in viewer.get(f"/sessions/?from={future}&to={future}").content.decode()
    assert "dates are YYYY-MM-DD" in viewer.get("/sessions/?from=yesterday").content.decode()


def test_the_site_chart_sums_the_sessions_average_power_per_minute():
    busy_site()
    now = clock.now()
    data = history.site_power_columns(since=now - dt.timedelta(hours=1), now=now)
    assert data["t"] == sorted(data["t"]) and len(data["t"]) == len(data["ev_kw"])
    # The latest minute with samples: four sessions at 16, 9.8, 6.1 A three-phase and 0 A.
    latest = [value for value in data["ev_kw"] if value is not None][-1]
    assert latest == pytest.approx((16 + 9.8 + 6.1) * 3 * 230 / 1000, rel=0.01)
    # The connection point: 100 A per phase (69 kW) and 60 kW subscribed: the lower counts.
    assert set(data["limit_kw"]) == {60.0}


def test_the_site_limit_follows_the_time_of_use_steps():
    import datetime as dt

    from loadmgmt.models import TimeOfUseRule, Zone

    root = Zone.objects.create(name="Connection point", max_power_kw=60)
    TimeOfUseRule.objects.create(zone=root, weekdays="0,1,2,3,4,5,6", start_time=dt.time(17), end_time=dt.time(20),
                                 limit_percent=50)
    day = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)  # TIME_ZONE is UTC in the tests
    minutes = [int((day + dt.timedelta(hours=hour)).timestamp()) for hour in (16, 17, 19, 20)]
    assert history.site_limit_kw(minutes) == [60.0, 30.0, 30.0, 60.0]


@pytest.mark.parametrize("time_of_day", [dt.time(14, 0), dt.time(0, 10)])
def test_energy_per_day_of_the_filtered_sessions(viewer, monkeypatch, time_of_day):
    """The sessions count on their start day: 47 minutes before 00:10 is the day before."""
    now = dt.datetime.combine(dt.date(2026, 12, 5), time_of_day, tzinfo=dt.UTC)  # TIME_ZONE is UTC in the tests
    monkeypatch.setattr(clock, "now", lambda: now)
    site = busy_site()
    data = viewer.get("/energy.json?kind=day").json()
    start_day = (now - dt.timedelta(minutes=47)).date().isoformat()
    assert {timezone.localtime(tx.start_time).date().isoformat() for tx in site.sessions.values()} == {start_day}
    assert data["labels"] == [start_day]
    assert data["energy_kwh"] == [pytest.approx(12.34 + 5.12 + 0.8 + 20.0)]
    month = viewer.get("/energy.json?kind=month&badge=alice").json()
    assert month["energy_kwh"] == [pytest.approx(12.34)]


def test_a_session_curve_has_power_and_current_per_phase(viewer):
    site = busy_site()
    data = viewer.get(f"/sessions/{site.sessions['CP-001'].pk}/curve.json").json()
    assert len(data["t"]) == 10
    assert data["power_kw"][-1] == pytest.approx(11.04)
    assert (data["L1"][-1], data["L2"][-1], data["L3"][-1]) == (16.0, 16.0, 16.0)


def log(cp_id: str, action: str, payload: object, *, error: str = "", direction: str = "in") -> None:
    OcppMessage.objects.create(timestamp=clock.now(), charge_point_id=cp_id, direction=direction,
                               message_type="CALL", action=action, payload=payload, error=error)


def test_the_log_filters_and_downloads(viewer):
    log("CP-A", "BootNotification", {"chargePointVendor": "V"})
    log("CP-A", "Heartbeat", {})
    log("CP-B", "StatusNotification", {"errorCode": "=HYPERLINK(\"x\")"}, error="=cmd|'/c calc'!A0")
    OcppMessage.objects.create(timestamp=clock.now(), charge_point_id="CP-A", direction="out", message_type="CALL",
                               unique_id="u-1", action="Reset", payload={"type": "Soft"})
    OcppMessage.objects.create(timestamp=clock.now(), charge_point_id="CP-A", direction="in",
                               message_type="CALLRESULT", unique_id="u-1", payload={"status": "Accepted"})
    page = viewer.get("/log/?charger=cp-a").content.decode()
    assert "↳ Reset" in page  # an answer says which call it answers
    assert "BootNotification" in page and "StatusNotification" not in page
    rows = list(csv.DictReader(io.StringIO(viewer.get("/log.csv?errors=1").content.decode())))
    assert [row["charge_point_id"] for row in rows] == ["CP-B"]
    assert rows[0]["error"].startswith("'=")  # never a formula in a spreadsheet
    lines = viewer.get("/log.json?action=heartbeat").content.decode().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["Heartbeat"]


def test_an_answer_names_the_call_of_its_own_time_when_a_message_id_was_used_before(viewer):
    """Chargers reuse message ids (counters restart at a reboot): an answer is matched with the
    call of that id logged within the calls' timeout before it, not an older one."""
    from dashboard.maintenance import ANSWER_WINDOW

    now = clock.now()
    # The older call stored last: read without the window, it would be the one found.
    for at, action in ((now, "Reset"), (now - ANSWER_WINDOW - dt.timedelta(minutes=1), "Heartbeat")):
        OcppMessage.objects.create(timestamp=at, charge_point_id="CP-R", direction="out", message_type="CALL",
                                   unique_id="7", action=action, payload={})
    OcppMessage.objects.create(timestamp=now, charge_point_id="CP-R", direction="in", message_type="CALLRESULT",
                               unique_id="7", payload={"status": "Accepted"})
    page = viewer.get("/log/?charger=CP-R").content.decode()
    assert "↳ Reset" in page and "↳ Heartbeat" not in page


def test_the_log_table_indexes_only_what_its_readers_use():
    """Every frame writes a log row: the charge point id (read case-insensitively, or after the
    time) has no index to maintain; the time and the charger keep theirs."""
    from django.db import connection

    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, OcppMessage._meta.db_table)
    indexed = {tuple(c["columns"]) for c in constraints.values() if c["index"] and not c["primary_key"]}
    assert ("charge_point_id",) not in indexed
    assert {("timestamp",), ("charger_id",)} <= indexed


def test_health_names_what_is_wrong():
    Charger.objects.create(charge_point_id="CP-GONE", registration_status=RegistrationStatus.ACCEPTED)
    checks = {check.name: check for check in maintenance.health_checks(clock.now())}
    assert not checks["Chargers"].ok and "CP-GONE" in checks["Chargers"].detail
    assert checks["Redis (channel layer, Celery broker)"].ok
    assert not checks["Control loop"].ok and "is the Celery worker or beat stopped" in checks["Control loop"].detail
    import redis
    from django.conf import settings

    from loadmgmt.tasks import GATE_KEY

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.set(GATE_KEY, "1", px=5000)  # what a periodic tick does
    try:
        checks = {check.name: check for check in maintenance.health_checks(clock.now())}
    finally:
        client.delete(GATE_KEY)  # other tests' ticks must not wait for it
    assert checks["Control loop"].ok and "last change of decision never" in checks["Control loop"].detail
