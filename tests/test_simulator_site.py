"""The simulator against the real server: a small fleet boots on Daphne, the meter answers Modbus."""

from __future__ import annotations

import asyncio

import pytest

from badges.models import Badge
from chargers.models import Charger, RegistrationStatus
from loadmgmt.models import Zone as ZoneRow
from meters.modbus import MeterConfig, read_meter
from meters.registers import IEM3X5X
from simulator import CarSpec, ChargerSpec, Site, Zone
from tests.conftest import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet_url(servers, transactional_db) -> str:
    """Daphne with the default (pending) policy; the test registers its chargers as accepted."""
    return servers.daphne()


def test_it_boots_three_chargers_and_serves_the_building_meter(fleet_url):
    cp_ids = ["SIM-1", "SIM-2", "SIM-3"]
    Badge.objects.create(id_tag="SIMTAG")
    root = ZoneRow.objects.create(name="Root", max_current_a=63)
    for cp_id in cp_ids:
        Charger.objects.create(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED, zone=root,
                               rated_max_current_a=32, phases=3)
    site = Site(fleet_url, zones=[Zone("root", capacity_a=63)])
    try:
        for cp_id in cp_ids:
            site.add_charger(ChargerSpec(cp_id, meter_interval_s=1.0), zone_id="root")
        site.add_meter("root", building_a=(10.0, 12.0, 14.0))
        site.start(timeout_s=30)

        wait_until(lambda: Charger.objects.filter(charge_point_id__in=cp_ids, connected=True).count() == 3)
        # The server configures each charger at boot: it reads our smart-charging keys.
        site.wait_until(lambda: all(site.charger(c).calls_received["GetConfiguration"] for c in cp_ids), 15)
        # ... and installs its safe default (whatever its value), which the charger now holds.
        site.wait_until(lambda: all(site.charger(c).profile_events(0) for c in cp_ids), 15)
        assert site.charger("SIM-1").profile_events(0)[0].status == "Accepted"

        tx = site.arrive("SIM-1", car=CarSpec(max_current_a=16, phases=3))
        assert tx is not None
        assert site.transaction_id("SIM-1") == tx

        config = MeterConfig(register_map=IEM3X5X, transport="tcp", host="127.0.0.1", port=site.meter_port,
                             unit_id=1, timeout_s=1.0)
        reading = asyncio.run(read_meter(config))
        car_a = site.charger("SIM-1").connectors[1].current_a
        assert reading.values["current_l1_a"] == pytest.approx(10.0 + car_a, abs=0.5)
        assert reading.values["current_l3_a"] == pytest.approx(14.0 + car_a, abs=0.5)
        site.leave("SIM-1")
        site.assert_clean()
    finally:
        site.stop()
