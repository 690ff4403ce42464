"""The simulated building meter, read over Modbus by the controller's own reader."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from meters.modbus import MeterConfig, MeterModbusError, MeterTimeout, read_meter
from meters.registers import IEM3X5X
from simulator.meter import BuildingLoad, MeterServer, SimMeter

pytestmark = pytest.mark.slow

EV = [(0.0, 0.0, 0.0)]


def ev_currents() -> tuple[float, float, float]:
    return EV[0]


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[SimMeter, MeterConfig]]:
    EV[0] = (0.0, 0.0, 0.0)
    meter = SimMeter("zone", ev_currents, building=BuildingLoad((10.0, 20.0, 30.0)), lag_s=1.0)
    server = await MeterServer([meter]).start()
    config = MeterConfig(register_map=IEM3X5X, transport="tcp", host="127.0.0.1", port=server.port, unit_id=1,
                         timeout_s=0.3)
    yield meter, config
    await server.stop()


@pytest.mark.asyncio
async def test_it_reports_building_plus_cars_per_phase(served):
    meter, config = served
    EV[0] = (16.0, 16.0, 0.0)
    meter.update(100.0)
    reading = await read_meter(config)
    assert [reading.values[f"current_l{n}_a"] for n in (1, 2, 3)] == pytest.approx([26.0, 36.0, 30.0])
    assert reading.values["power_w"] == pytest.approx((26 + 36 + 30) * 230.0, rel=1e-4)


@pytest.mark.asyncio
async def test_it_shows_the_value_of_lag_seconds_ago_but_the_checker_gets_the_truth(served):
    meter, config = served
    meter.update(100.0)
    meter.building.set(100.5, (50.0, 50.0, 50.0))
    meter.update(100.6)
    assert (await read_meter(config)).values["current_l1_a"] == pytest.approx(10.0)
    assert meter.true_building_a(100.6) == (50.0, 50.0, 50.0)
    meter.update(101.6)
    assert (await read_meter(config)).values["current_l1_a"] == pytest.approx(50.0)


@pytest.mark.asyncio
async def test_a_dead_meter_times_out_or_answers_exceptions_then_recovers(served):
    meter, config = served
    meter.update(100.0)
    meter.set_dead("silent")
    with pytest.raises(MeterTimeout):
        await read_meter(config)
    meter.set_dead("exception")
    with pytest.raises(MeterModbusError):
        await read_meter(config)
    meter.set_dead(None)
    assert (await read_meter(config)).values["current_l3_a"] == pytest.approx(30.0)


def test_building_load_steps_in_time_order():
    load = BuildingLoad((1.0, 1.0, 1.0))
    load.step_at(20.0, (3.0, 3.0, 3.0))
    load.step_at(10.0, (2.0, 2.0, 2.0))
    assert [load.at(t)[0] for t in (0.0, 10.0, 15.0, 25.0)] == [1.0, 2.0, 2.0, 3.0]
