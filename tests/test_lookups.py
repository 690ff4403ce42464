"""`field__among=values` (evce.lookups): the rows `__in` would give, on either database."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chargers.models import Charger, Connector

pytestmark = pytest.mark.django_db


@pytest.fixture
def chargers() -> list[Charger]:
    return [Charger.objects.create(charge_point_id=f"CP-{n}") for n in range(5)]


def test_it_selects_what_in_selects(chargers):
    wanted = {chargers[0].pk, chargers[3].pk, 10**9}
    assert set(Charger.objects.filter(pk__among=wanted).values_list("pk", flat=True)) == \
        set(Charger.objects.filter(pk__in=wanted).values_list("pk", flat=True)) == {chargers[0].pk, chargers[3].pk}
    names = Charger.objects.filter(charge_point_id__among=("CP-1", "CP-4")).values_list("charge_point_id", flat=True)
    assert sorted(names) == ["CP-1", "CP-4"]


def test_foreign_keys_take_it(chargers):
    for charger in chargers:
        Connector.objects.create(charger=charger, connector_id=1)
    wanted = [chargers[1].pk, chargers[2].pk]
    assert sorted(Connector.objects.filter(charger_id__among=wanted).values_list("charger_id", flat=True)) == wanted
    assert sorted(Connector.objects.filter(charger__among=wanted).values_list("charger_id", flat=True)) == wanted


def test_updates_and_excludes_take_it(chargers):
    assert Charger.objects.filter(pk__among=[c.pk for c in chargers[:2]]).update(phases=1) == 2
    assert Charger.objects.exclude(pk__among=[chargers[0].pk]).count() == 4
    assert sorted(Charger.objects.filter(phases=1).values_list("pk", flat=True)) == [c.pk for c in chargers[:2]]


def test_an_empty_collection_matches_nothing(chargers):
    assert not Charger.objects.filter(pk__among=[]).exists()
    assert Charger.objects.exclude(pk__among=[]).count() == 5


def test_it_is_one_parameter_whatever_the_count(chargers):
    """One statement text for 1 or 5 keys: on PostgreSQL an array, on SQLite a JSON array read by
    json_each (a new `IN (%s, …)` text per count filled SQLite's statement cache)."""
    pks = [c.pk for c in chargers]
    texts = set()
    for count in (1, 5):
        with CaptureQueriesContext(connection) as queries:
            assert Charger.objects.filter(pk__among=pks[:count]).count() == count
        texts.add(queries.captured_queries[-1]["sql"].replace(str(pks[:count]), "").split(" WHERE ")[0])
        sql = queries.captured_queries[-1]["sql"]
        if connection.vendor == "postgresql":
            assert "= ANY(" in sql and " IN (" not in sql
        else:
            assert "json_each(" in sql
    assert len(texts) == 1


def test_text_keys_match_as_in_does(chargers):
    """A str column compared with str values through json_each; values JSON would change (a
    quote, non-ASCII) still match exactly."""
    odd = Charger.objects.create(charge_point_id='CP-"é"')
    names = Charger.objects.filter(charge_point_id__among=['CP-"é"', "CP-2", "cp-3"]).values_list(
        "charge_point_id", flat=True)
    assert sorted(names) == ['CP-"é"', "CP-2"] and odd.pk


def test_values_json_would_change_fall_back_to_a_plain_in_list_on_sqlite(chargers):
    """Booleans (JSON's true is not SQLite's 1) are sent as `IN (…)`, so they match exactly what
    `__in` matches."""
    Charger.objects.filter(pk=chargers[0].pk).update(connected=True)
    with CaptureQueriesContext(connection) as queries:
        among = set(Charger.objects.filter(connected__among=[True, 0]).values_list("pk", flat=True))
    assert among == set(Charger.objects.filter(connected__in=[True, 0]).values_list("pk", flat=True))
    assert len(among) == 5
    if connection.vendor == "sqlite":
        assert "json_each(" not in queries.captured_queries[-1]["sql"]


def test_a_single_value_is_refused():
    with pytest.raises(TypeError, match="collection"):
        Charger.objects.filter(pk__among=5)
