"""read_meter against real pymodbus servers impersonating Schneider meters."""

from __future__ import annotations

import asyncio

import pytest

from meters.modbus import (
    MeterConfig,
    MeterConnectionError,
    MeterDataError,
    MeterModbusError,
    MeterReading,
    MeterTimeout,
    read_meter,
)
from meters.registers import METER_TYPES, RegisterMap, build_generic_map, get_register_map
from tests.meters_fakes import (
    FakeMeter,
    FakeMeterServer,
    closed_port,
    start_fake_meter,
    typical_values,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


def assert_values(reading: MeterReading, expected: dict[str, float], register_map: RegisterMap) -> None:
    """Equal up to the register's resolution (integer registers quantise, float32 rounds)."""
    assert set(reading.values) == set(expected), reading.errors
    for quantity, value in expected.items():
        reg = register_map.register_for(quantity)
        if reg.data_type == "float32":
            assert reading.values[quantity] == pytest.approx(value, rel=1e-6), quantity
        else:
            assert abs(reading.values[quantity] - value) <= abs(reg.scale) / 2 + 1e-9, quantity


@pytest.mark.parametrize("meter_type", sorted(METER_TYPES))
async def test_reads_each_meter_type_and_follows_changes(meter_type: str) -> None:
    register_map = get_register_map(meter_type)
    values = typical_values(register_map)
    async with await start_fake_meter(register_map, values, unit_id=3) as server:
        reading = await read_meter(server.config(), now=1234.5)
        assert_values(reading, values, register_map)
        assert reading.errors == ()
        assert reading.timestamp == 1234.5
        assert reading.meter_type == meter_type

        changed = {quantity: value * 0.5 + 1 for quantity, value in values.items()}
        server.meter().set_values(changed)
        assert_values(await read_meter(server.config()), changed, register_map)


async def test_block_reads_use_few_requests() -> None:
    register_map = get_register_map("iem3x5x")
    async with await start_fake_meter(register_map, typical_values(register_map)) as server:
        await read_meter(server.config())
        assert server.meter().requests == 5  # 13 quantities, 5 contiguous blocks


async def test_negative_power_export_is_read() -> None:
    register_map = get_register_map("iem3x5x")
    values = typical_values(register_map) | {"power_w": -4200.0}
    async with await start_fake_meter(register_map, values) as server:
        reading = await read_meter(server.config())
        assert reading.values["power_w"] == pytest.approx(-4200.0)


async def test_word_order_swapped_device_needs_override() -> None:
    register_map = get_register_map("iem3x5x")
    values = typical_values(register_map)
    async with await start_fake_meter(register_map, values, word_order="little") as server:
        reading = await read_meter(server.config(word_order="little"))
        assert_values(reading, values, register_map)
        # Read with the documented order, the same words are wrong: a value must differ
        # (or be rejected), never silently equal.
        try:
            wrong = await read_meter(server.config())
        except MeterDataError:
            return
        assert wrong.values.get("power_w") != pytest.approx(values["power_w"])
        assert wrong.values.get("energy_import_wh") != values["energy_import_wh"]


async def test_generic_map_with_mixed_types_orders_and_function_codes() -> None:
    generic = build_generic_map(
        {
            "power_w": {"register": 41, "data_type": "int32", "scale": 0.1, "word_order": "little"},
            "current_l1_a": {"address": 10, "data_type": "uint16", "scale": 0.01, "function_code": 4},
            "voltage_l1_v": {"address": 11, "data_type": "float32", "function_code": 4},
            "energy_import_wh": {"address": 50, "data_type": "uint32", "scale": 1000},
        },
        key="acme",
    )
    values = {"power_w": -1234.5, "current_l1_a": 16.04, "voltage_l1_v": 229.75, "energy_import_wh": 987_000.0}
    async with await start_fake_meter(generic, values) as server:
        reading = await read_meter(server.config())
        assert_values(reading, values, generic)
        assert reading.meter_type == "acme"


async def test_rtu_over_tcp_gateway() -> None:
    register_map = get_register_map("iem3x5x")
    values = typical_values(register_map)
    async with await start_fake_meter(register_map, values, unit_id=7, framer="rtu") as server:
        config = server.config()
        assert config.transport == "rtu_over_tcp"
        assert_values(await read_meter(config), values, register_map)


async def test_rtu_serial_client_path() -> None:
    """The serial client, through a pyserial socket:// URL to an RTU-framed server."""
    register_map = get_register_map("pm5300")
    values = typical_values(register_map)
    async with await start_fake_meter(register_map, values, unit_id=12, framer="rtu") as server:
        config = server.config(transport="rtu_serial")
        assert config.serial_device.startswith("socket://")
        assert_values(await read_meter(config), values, register_map)


async def test_powertag_gateway_with_several_unit_ids() -> None:
    register_map = get_register_map("powertag")
    tags = [
        FakeMeter(register_map, unit_id=unit_id, values=typical_values(register_map) | {"power_w": 1000.0 * unit_id})
        for unit_id in (150, 151, 152)
    ]
    async with FakeMeterServer(tags) as gateway:
        readings = await asyncio.gather(*(read_meter(gateway.config(t.unit_id)) for t in tags))
        assert [reading.values["power_w"] for reading in readings] == [150_000.0, 151_000.0, 152_000.0]


async def test_silent_meter_times_out_within_timeout() -> None:
    register_map = get_register_map("iem3x5x")
    async with await start_fake_meter(register_map, typical_values(register_map), silent=True) as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(MeterTimeout, match="no answer within 0.3 s"):
            await read_meter(server.config(timeout_s=0.3))
        assert loop.time() - started < 0.3 + 0.25
        assert server.meter().requests == 1


async def test_meter_that_stops_answering_mid_life() -> None:
    register_map = get_register_map("powertag")
    async with await start_fake_meter(register_map, typical_values(register_map)) as server:
        await read_meter(server.config(timeout_s=0.3))
        server.meter().silent = True
        with pytest.raises(MeterTimeout):
            await read_meter(server.config(timeout_s=0.3))


async def test_device_without_the_registers_gives_modbus_error() -> None:
    register_map = get_register_map("iem3x5x")
    other_device = get_register_map("compact_nsx")  # a device with a different register layout
    async with await start_fake_meter(other_device, typical_values(other_device)) as server:
        with pytest.raises(MeterModbusError, match="IllegalDataAddress") as caught:
            await read_meter(server.config(register_map=register_map))
        assert caught.value.exception_code == 2


async def test_forced_exception_code() -> None:
    register_map = get_register_map("pm5300")
    async with await start_fake_meter(register_map, typical_values(register_map)) as server:
        server.meter().exception_code = 4
        with pytest.raises(MeterModbusError, match="ServerDeviceFailure") as caught:
            await read_meter(server.config())
        assert caught.value.exception_code == 4


async def test_gateway_unreachable_device_stops_at_first_block() -> None:
    register_map = get_register_map("powertag")
    async with await start_fake_meter(register_map, typical_values(register_map), unit_id=150) as server:
        server.meter().exception_code = 11
        with pytest.raises(MeterModbusError, match="GatewayTargetDeviceFailedToRespond"):
            await read_meter(server.config())
        assert server.meter().requests == 1


async def test_partially_supported_device_returns_values_and_errors() -> None:
    register_map = get_register_map("iem3x5x")
    values = typical_values(register_map)
    async with await start_fake_meter(register_map, values, omit=["frequency_hz"]) as server:
        reading = await read_meter(server.config())
        assert "frequency_hz" not in reading.values
        assert [e.quantity for e in reading.errors] == ["frequency_hz"]
        assert "IllegalDataAddress" in reading.errors[0].reason
        assert reading.values["power_w"] == pytest.approx(values["power_w"])


async def test_nan_and_markers_are_rejected_with_reason() -> None:
    register_map = get_register_map("iem3x5x")
    async with await start_fake_meter(register_map, typical_values(register_map)) as server:
        meter = server.meter()
        meter.set_words("power_w", [0xFFC0, 0x0000])  # Schneider float "not available"
        meter.set_words("energy_export_wh", [0x8000, 0, 0, 0])  # Int64 "not available"
        meter.set_words("current_l1_a", [0x7F80, 0x0000])  # +inf
        reading = await read_meter(server.config())
        reasons = {e.quantity: e.reason for e in reading.errors}
        assert set(reasons) == {"power_w", "energy_export_wh", "current_l1_a"}
        assert "NaN" in reasons["power_w"]
        assert "not available" in reasons["energy_export_wh"]
        assert "infinity" in reasons["current_l1_a"]
        assert not set(reasons) & set(reading.values)


async def test_all_garbage_is_a_data_error() -> None:
    register_map = build_generic_map({"power_w": {"address": 100, "data_type": "float32", "scale": 1000}})
    async with await start_fake_meter(register_map, {"power_w": 1.0}) as server:
        server.meter().set_words("power_w", [0x6E6B, 0x2800])  # ~1e31 W
        with pytest.raises(MeterDataError, match="plausibility"):
            await read_meter(server.config())


async def test_connection_refused() -> None:
    config = MeterConfig(get_register_map("iem3x5x"), host="127.0.0.1", port=closed_port(), timeout_s=1.0)
    with pytest.raises(MeterConnectionError, match="cannot connect"):
        await read_meter(config)
