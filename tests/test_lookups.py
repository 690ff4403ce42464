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


def test_it_is_one_parameter_on_postgresql(chargers):
    pks = [c.pk for c in chargers]
    with CaptureQueriesContext(connection) as queries:
        assert Charger.objects.filter(pk__among=pks).count() == 5
    sql = queries.captured_queries[-1]["sql"]
    if connection.vendor == "postgresql":
        assert "= ANY(" in sql and " IN (" not in sql
    else:
        assert " IN (" in sql


def test_a_single_value_is_refused():
    with pytest.raises(TypeError, match="collection"):
        Charger.objects.filter(pk__among=5)
