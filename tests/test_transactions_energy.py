"""Session energy and power rules (transactions.energy): pure functions, no database."""

from __future__ import annotations

import datetime as dt

from transactions.energy import ENERGY, POWER, Reading, session_energy

T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_it_takes_meter_stop_minus_meter_start():
    figures = session_energy(meter_start_wh=1000, meter_stop_wh=4000, readings=[Reading(at(5), ENERGY, 1500)])
    assert (figures.energy_wh, figures.last_register_wh, figures.last_reading_at) == (3000, 1500, at(5))


def test_it_falls_back_to_the_last_register_reading_in_any_unit():
    readings = [Reading(at(10), ENERGY, 2.5, "kWh"), Reading(at(5), ENERGY, 1.5, "kWh")]
    assert session_energy(meter_start_wh=1000, meter_stop_wh=None, readings=readings).energy_wh == 1500
    # A stop below the start (meter swapped): the readings, not a negative energy.
    assert session_energy(meter_start_wh=1000, meter_stop_wh=10, readings=readings).energy_wh == 1500


def test_without_a_meter_start_it_takes_the_register_span():
    readings = [Reading(at(0), ENERGY, 500), Reading(at(30), ENERGY, 2500)]
    assert session_energy(meter_start_wh=None, meter_stop_wh=None, readings=readings).energy_wh == 2000


def test_nothing_known_means_unknown_energy():
    assert session_energy(meter_start_wh=1000, meter_stop_wh=None, readings=[]).energy_wh is None


def test_peak_power_from_total_then_phases_then_register_slope():
    total = [Reading(at(1), POWER, 7.2, "kW"), Reading(at(2), POWER, 6900, "W")]
    assert session_energy(meter_start_wh=0, meter_stop_wh=0, readings=total).peak_power_w == 7200
    phases = [Reading(at(1), POWER, 2300, "W", phase) for phase in ("L1", "L2", "L3")]
    assert session_energy(meter_start_wh=0, meter_stop_wh=0, readings=phases).peak_power_w == 6900
    registers = [Reading(at(0), ENERGY, 0), Reading(at(30), ENERGY, 5500), Reading(at(60), ENERGY, 6000)]
    assert session_energy(meter_start_wh=0, meter_stop_wh=6000, readings=registers).peak_power_w == 11000
