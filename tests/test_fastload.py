"""evce.fastload: instances built from rows behave as Django's own from `.only()`."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chargers.models import Charger
from evce import fastload
from loadmgmt.models import Zone

pytestmark = pytest.mark.django_db


def test_the_loaded_fields_equal_djangos_and_the_others_load_on_access():
    zone = Zone.objects.create(name="Board", max_current_a=63)
    Charger.objects.create(charge_point_id="CP-1", zone=zone, rated_max_current_a=16, vendor="ACME")
    Charger.objects.create(charge_point_id="CP-2", rated_max_current_a=32)
    queryset = Charger.objects.order_by("charge_point_id")
    with CaptureQueriesContext(connection) as queries:
        light = fastload.instances(queryset, ("charge_point_id", "zone", "rated_max_current_a"))
    assert len(queries) == 1
    plain = list(queryset.only("charge_point_id", "zone", "rated_max_current_a"))
    assert [(c.pk, c.charge_point_id, c.zone_id, c.rated_max_current_a) for c in light] == \
        [(c.pk, c.charge_point_id, c.zone_id, c.rated_max_current_a) for c in plain]
    assert light[0].get_deferred_fields() == plain[0].get_deferred_fields()
    assert light[0] == plain[0] and not light[0]._state.adding
    with CaptureQueriesContext(connection) as queries:
        assert light[0].vendor == "ACME" and light[0].zone == zone and light[1].zone is None
    assert len(queries) == 2  # the deferred field, then the zone


def test_an_instance_saves_its_changes():
    Charger.objects.create(charge_point_id="CP-1", rated_max_current_a=16)
    [charger] = fastload.instances(Charger.objects.all(), ("rated_max_current_a",))
    charger.rated_max_current_a = 20
    charger.save(update_fields=["rated_max_current_a"])
    assert Charger.objects.get().rated_max_current_a == 20
