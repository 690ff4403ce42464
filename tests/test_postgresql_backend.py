"""evce.postgresql: date-times read through psycopg's C loader are what Django's loader gives."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from chargers.models import Charger
from evce.postgresql.base import HEALTH_CHECK_AFTER_S

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the PostgreSQL backend's own loader")


def test_date_times_come_back_aware_in_utc_to_the_microsecond():
    moments = [dt.datetime(2026, 3, 29, 1, 59, 59, 999999, tzinfo=dt.UTC),
               dt.datetime(2026, 3, 29, 3, 0, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))),
               dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)]
    for n, moment in enumerate(moments):
        Charger.objects.create(charge_point_id=f"CP-{n}", last_seen=moment)
    loaded = list(Charger.objects.order_by("charge_point_id").values_list("last_seen", flat=True))
    assert loaded == moments
    assert all(value.tzinfo is dt.UTC for value in loaded)
    assert connection.connection.adapters.get_loader(1184, 0).__name__ == "UtcTimestamptzLoader"


def test_a_session_in_another_time_zone_still_reads_utc():
    Charger.objects.create(charge_point_id="CP-1", last_seen=dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'Europe/Brussels'")
        try:
            value = Charger.objects.values_list("last_seen", flat=True).get()
        finally:
            cursor.execute("SET TIME ZONE 'UTC'")
    assert value == dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


@pytest.fixture
def health_checks(monkeypatch) -> list[int]:
    """The server process ids Django's health check ran against (its `SELECT 1`), in order."""
    from django.db.backends.postgresql import base as django_postgresql

    checked: list[int] = []
    check = django_postgresql.DatabaseWrapper.is_usable

    def counted(wrapper: django_postgresql.DatabaseWrapper) -> bool:
        checked.append(wrapper.connection.info.backend_pid)
        return check(wrapper)

    monkeypatch.setattr(django_postgresql.DatabaseWrapper, "is_usable", counted)
    return checked


def _as_a_database_call_ends() -> None:
    """What Channels does around each database call: the connection is to be checked before its next use."""
    from django.db import close_old_connections

    close_old_connections()


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_just_answered_is_used_without_a_health_check(health_checks):
    from django.db import transaction

    with transaction.atomic():
        Charger.objects.create(charge_point_id="CP-1")  # committed: the server answered
    _as_a_database_call_ends()
    assert Charger.objects.count() == 1
    assert health_checks == []

    connection.answered_at -= 2 * HEALTH_CHECK_AFTER_S  # idle for longer: checked again
    _as_a_database_call_ends()
    assert Charger.objects.count() == 1
    assert health_checks == [connection.connection.info.backend_pid]


@pytest.mark.django_db(transaction=True)
def test_a_connection_dropped_while_idle_is_replaced_before_it_is_used(health_checks):
    import psycopg

    assert Charger.objects.count() == 0
    dropped = connection.connection.info.backend_pid
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [dropped])
    connection.answered_at -= 2 * HEALTH_CHECK_AFTER_S
    _as_a_database_call_ends()

    assert Charger.objects.count() == 0  # no OperationalError: a new connection served it
    assert health_checks == [dropped]
    assert connection.connection.info.backend_pid != dropped
