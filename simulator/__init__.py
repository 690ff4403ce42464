"""Site simulator: virtual chargers, cars and building meters against the real controller.

One simulator for tests, benchmarks and the ``simulate_fleet`` command. Its modules import
nothing from Django (the app exists only to register the command), so use them anywhere.

- :mod:`simulator.composite` — OCPP 1.6 §3.13 installed profiles and composite limit (pure);
- :mod:`simulator.car` — a car following the charger's limit after a delay (pure);
- :mod:`simulator.charger` — an OCPP 1.6J charge point with configurable misbehaviour;
- :mod:`simulator.meter` — the building meter, a real Modbus TCP server (iEM3x5x map);
- :mod:`simulator.checker` — the continuous zone-capacity invariant checker (pure);
- :mod:`simulator.site` — N chargers in one event loop, sync façade :class:`Site`.

Usage in a synchronous test (``ocpp_url`` is a running Daphne; chargers must be accepted)::

    from simulator import CarSpec, ChargerSpec, Site, Zone

    zones = [Zone("root", capacity_a=63), Zone("level-1", parent="root", capacity_a=40, dynamic=True)]
    site = Site(ocpp_url, zones=zones, new_session_grace_s=2.0, reaction_grace_s=10.0)
    site.add_charger(ChargerSpec("CP-1"), zone_id="level-1")
    site.add_charger(ChargerSpec("CP-2", phases=1, supply_phase="L2", behaviour="slow",
                                 answer_delay_s=3), zone_id="level-1")
    meter = site.add_meter("level-1", building_a=(10, 10, 10), lag_s=1.0)
    site.start()                          # Modbus server up, chargers connected and booted
    port = site.meter_port                # point a Meter row at 127.0.0.1:port, unit id meter.unit_id
    site.arrive("CP-1", car=CarSpec(max_current_a=16, phases=3))   # Authorize + StartTransaction
    site.arrivals(["CP-2"], interval_s=0)                           # a burst (or one by one)
    site.set_building("level-1", (25, 25, 25))                      # a building load step
    site.wait_until(lambda: site.charger("CP-1").limit_a() <= 12)
    print(site.report())                  # breaches, A·s per zone, StartTransaction → TxProfile
    site.assert_clean()                   # raises with a readable report on any breach
    site.stop()

Mapping the controller's zones and meter (in the test, which may import Django)::

    Zone(str(row.pk), parent=str(row.parent_id) if row.parent_id else None,
         capacity_a=row.max_current_a, capacity_kw=row.max_power_kw, dynamic=row.mode == "dynamic")
    Meter.objects.create(name="Level 1", meter_type="iem3x5x", transport="tcp", host="127.0.0.1",
                         port=site.meter_port, unit_id=meter.unit_id, role="zone_total", zone=row,
                         poll_period_s=1, timeout_s=0.5)

Other controls: ``site.set_zone_capacity(...)`` (time-of-use drop, for the checker),
``site.set_meter_dead("level-1", "silent" | "exception" | None)``,
``site.set_behaviour("CP-1", "silent")``, ``site.leave("CP-1")``, ``site.in_loop(fn)`` for
consistent reads of a charger (``.limit_a()``, ``.transaction_id()``, ``.profile_events()``,
``.held_limits_a()``, ``.connectors[1].current_a``). Async code (benchmarks, the command)
uses :class:`AsyncSite` with the same methods, awaited. :mod:`simulator.central` is a tiny
in-process central system for testing the simulator itself without Django.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.car import Car, CarSpec
    from simulator.charger import ChargerEvent, ChargerSpec, ProfileEvent, SimulatedCharger
    from simulator.checker import Breach, CheckerReport, Holding, InvariantChecker, Zone
    from simulator.composite import ChargingProfile, CompositeLimit, ProfileLimits, ProfileStore
    from simulator.meter import BuildingLoad, MeterServer, SimMeter
    from simulator.site import AsyncSite, Site

# The names above, each from its module, imported on first use (PEP 562): the app is installed
# for its management command, and Django imports every installed app's package in each web
# process at start, where the simulator (its websocket client, pymodbus' server) was ~0.1 s of
# a start-up that a reconnect storm waits for, and memory no web process uses.
_HOME = {
    "Car": "car", "CarSpec": "car",
    "ChargerEvent": "charger", "ChargerSpec": "charger", "ProfileEvent": "charger", "SimulatedCharger": "charger",
    "Breach": "checker", "CheckerReport": "checker", "Holding": "checker", "InvariantChecker": "checker",
    "Zone": "checker",
    "ChargingProfile": "composite", "CompositeLimit": "composite", "ProfileLimits": "composite",
    "ProfileStore": "composite",
    "BuildingLoad": "meter", "MeterServer": "meter", "SimMeter": "meter",
    "AsyncSite": "site", "Site": "site",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"simulator.{_HOME[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "AsyncSite",
    "Breach",
    "BuildingLoad",
    "Car",
    "CarSpec",
    "ChargerEvent",
    "ChargerSpec",
    "ChargingProfile",
    "CheckerReport",
    "CompositeLimit",
    "Holding",
    "InvariantChecker",
    "MeterServer",
    "ProfileEvent",
    "ProfileLimits",
    "ProfileStore",
    "SimMeter",
    "SimulatedCharger",
    "Site",
    "Zone",
]
