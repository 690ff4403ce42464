"""evce.postgresql: date-times read through psycopg's C loader are what Django's loader gives."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from chargers.models import Charger

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
