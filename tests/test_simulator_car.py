"""The simulated car follows the charger's limit like an IEC 61851 car."""

from __future__ import annotations

import pytest

from simulator.car import Car, CarSpec


def test_it_follows_the_limit_after_its_response_delay():
    car = Car(CarSpec(max_current_a=32, phases=3, response_delay_s=1.0), now_s=0.0)
    car.offer(0.0, 16.0)
    assert car.update(0.5) == 0.0
    assert car.update(1.0) == 16.0
    car.offer(5.0, 10.0)
    assert car.update(5.5) == 16.0  # still acting on the old signal
    assert car.update(6.0) == 10.0


def test_it_never_draws_more_than_its_on_board_charger():
    car = Car(CarSpec(max_current_a=16, response_delay_s=0.0), now_s=0.0)
    car.offer(0.0, 32.0)
    assert car.update(0.1) == 16.0


def test_it_pauses_below_six_amps():
    car = Car(CarSpec(response_delay_s=0.0), now_s=0.0)
    car.offer(0.0, 5.9)
    assert car.update(0.1) == 0.0
    car.offer(1.0, 6.0)
    assert car.update(1.1) == 6.0


def test_it_integrates_energy_and_stops_when_full():
    car = Car(CarSpec(max_current_a=10, phases=1, demand_wh=2300 / 3600 * 2, response_delay_s=0.0), now_s=0.0)
    car.offer(0.0, 10.0)
    car.update(0.0)
    car.update(1.0)
    assert car.energy_wh == pytest.approx(2300 / 3600)
    car.update(2.0)
    assert car.full
    assert car.update(3.0) == 0.0
