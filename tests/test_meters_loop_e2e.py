"""Meter → zone → loop → chargers: the building's load moves the EV limits; a dead meter falls back."""

from __future__ import annotations

import datetime as dt

from ocpp.v16 import call

from badges.models import Badge
from chargers.models import Charger, RegistrationStatus
from evce import clock
from loadmgmt.models import SiteSettings
from meters import services
from meters.registers import get_register_map
from tests.loop_helpers import settle
from tests.meters_fakes import typical_values
from tests.meters_lab import dynamic_zone, make_meter
from tests.ocpp_sim import utc_iso

IEM = get_register_map("iem3x5x")


def building(amps: float) -> dict[str, float]:
    return typical_values(IEM) | {"current_l1_a": amps, "current_l2_a": amps, "current_l3_a": amps}


def test_building_load_drives_the_ev_limits_and_a_dead_meter_gives_the_fallback(ocpp_url, charger_factory, lab):
    settings = SiteSettings.load()
    settings.min_on_s = settings.min_off_s = 0
    settings.save()
    zone = dynamic_zone(max_current_a=100.0, fallback_current_a=16.0)
    incomer = lab.meter(IEM, building(40.0))
    # A generous timeout: on a loaded machine a 0.3 s read may time out, and the zone would fall back.
    make_meter(lab, incomer, "Incomer", role="zone_total", zone=zone, timeout_s=1.5)
    sims = []
    for n in range(2):
        Charger.objects.create(charge_point_id=f"CP-E2E-{n}", registration_status=RegistrationStatus.ACCEPTED,
                               zone=zone, rated_max_current_a=32)
    for n in range(2):
        sim = charger_factory(ocpp_url, f"CP-E2E-{n}").connect()
        sim.boot()
        Badge.objects.create(id_tag=f"DRIVER-{n}")
        sim.call(call.StartTransaction(connector_id=1, id_tag=f"DRIVER-{n}", meter_start=0, timestamp=utc_iso()))
        sims.append(sim)

    def step(seconds: float = 0.0) -> list[float]:
        now = clock.now() + dt.timedelta(seconds=seconds)
        services.meters_poll_due(now=now)
        settle(now)
        return [sim.last_tx_limit() for sim in sims]

    assert step() == [30.0, 30.0]  # (100 - 40) / 2
    incomer.set_values(building(80.0))
    assert step(5) == [10.0, 10.0]  # the building takes more: the cars get less
    incomer.set_values(building(20.0))
    assert step(10) == [32.0, 32.0]  # it drops again: the cars go back up to their maximum
    incomer.silent = True
    assert step(10 + settings.measurement_max_age_s + 5) == [8.0, 8.0]  # stale: fallback 16 A shared
