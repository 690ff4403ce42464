"""poll_meters: concurrency, isolation of slow or broken meters, shared endpoints."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from meters import modbus
from meters.modbus import MeterConfig, MeterError, MeterReading, MeterTimeout, poll_meters
from meters.registers import get_register_map
from tests.meters_fakes import ConcurrencyTracker, FakeMeter, FakeMeterServer, start_fake_meter, typical_values

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

IEM = get_register_map("iem3x5x")
POWERTAG = get_register_map("powertag")


class CompletionLog:
    """Records the order in which poll_meters reports meters (its on_result hook)."""

    def __init__(self) -> None:
        self.order: list[str] = []

    def __call__(self, key: str, result: MeterReading | MeterError) -> None:
        self.order.append(key)


async def test_silent_meter_does_not_delay_a_responsive_one() -> None:
    log = CompletionLog()
    async with AsyncExitStack() as stack:
        silent = await stack.enter_async_context(await start_fake_meter(IEM, typical_values(IEM), silent=True))
        alive = await stack.enter_async_context(await start_fake_meter(IEM, typical_values(IEM)))
        configs = {"silent": silent.config(timeout_s=0.5), "alive": alive.config(timeout_s=0.5)}
        results = await poll_meters(configs, now=99.0, on_result=log)

    assert log.order == ["alive", "silent"]
    assert isinstance(results["silent"], MeterTimeout)
    reading = results["alive"]
    assert isinstance(reading, MeterReading)
    assert reading.timestamp == 99.0
    assert reading.values["power_w"] == pytest.approx(typical_values(IEM)["power_w"])


async def test_many_meters_with_failures_mixed_in() -> None:
    log = CompletionLog()
    async with AsyncExitStack() as stack:
        configs: dict[str, MeterConfig] = {}
        for index in range(12):
            silent = index in (2, 7)
            values = typical_values(IEM) | {"power_w": 1000.0 * index}
            server = await stack.enter_async_context(await start_fake_meter(IEM, values, silent=silent))
            configs[f"m{index}"] = server.config(timeout_s=0.5)
        results = await poll_meters(configs, on_result=log)

    assert set(log.order[-2:]) == {"m2", "m7"}  # the silent ones finish last, whatever the order given
    for key, result in results.items():
        if key in ("m2", "m7"):
            assert isinstance(result, MeterTimeout)
        else:
            assert isinstance(result, MeterReading)
            assert result.values["power_w"] == pytest.approx(1000.0 * int(key[1:]))


async def test_silent_tag_behind_gateway_does_not_delay_its_siblings() -> None:
    log = CompletionLog()
    tags = [FakeMeter(POWERTAG, unit_id=uid, values=typical_values(POWERTAG)) for uid in (150, 151, 152)]
    tags[0].silent = True
    async with FakeMeterServer(tags) as gateway:
        configs = {f"tag{t.unit_id}": gateway.config(t.unit_id, timeout_s=0.5) for t in tags}
        results = await poll_meters(configs, on_result=log)
    assert log.order[-1] == "tag150"
    assert isinstance(results["tag150"], MeterTimeout)
    assert all(isinstance(results[key], MeterReading) for key in ("tag151", "tag152"))


async def test_connections_per_endpoint_are_limited() -> None:
    tracker = ConcurrencyTracker()
    tags = [
        FakeMeter(POWERTAG, unit_id=uid, values=typical_values(POWERTAG), delay_s=0.02, tracker=tracker)
        for uid in range(100, 106)
    ]
    async with FakeMeterServer(tags) as gateway:
        configs = {t.unit_id: gateway.config(t.unit_id) for t in tags}
        results = await poll_meters(configs, max_per_endpoint=2)
    assert all(isinstance(result, MeterReading) for result in results.values())
    assert tracker.peak == 2


async def test_serial_bus_is_used_one_meter_at_a_time() -> None:
    tracker = ConcurrencyTracker()
    meters = [
        FakeMeter(IEM, unit_id=uid, values=typical_values(IEM), delay_s=0.01, tracker=tracker) for uid in (1, 2, 3)
    ]
    async with FakeMeterServer(meters, framer="rtu") as bus:
        configs = {m.unit_id: bus.config(m.unit_id, transport="rtu_serial") for m in meters}
        results = await poll_meters(configs, max_per_endpoint=8)
    assert all(isinstance(result, MeterReading) for result in results.values())
    assert tracker.peak == 1


async def test_unexpected_bug_is_isolated_to_its_meter(monkeypatch: pytest.MonkeyPatch) -> None:
    real_read_meter = modbus.read_meter

    async def flaky_read_meter(config: MeterConfig, now: float | None = None) -> MeterReading:
        if config.unit_id == 2:
            raise RuntimeError("decoder bug")
        return await real_read_meter(config, now)

    monkeypatch.setattr(modbus, "read_meter", flaky_read_meter)
    meters = [FakeMeter(IEM, unit_id=uid, values=typical_values(IEM)) for uid in (1, 2)]
    async with FakeMeterServer(meters) as server:
        results = await poll_meters({uid: server.config(uid) for uid in (1, 2)})
    assert isinstance(results[1], MeterReading)
    assert isinstance(results[2], MeterError)
    assert "RuntimeError: decoder bug" in str(results[2])


async def test_failing_callback_does_not_lose_readings() -> None:
    def broken_callback(key: int, result: MeterReading | MeterError) -> None:
        raise RuntimeError("subscriber bug")

    meters = [FakeMeter(IEM, unit_id=uid, values=typical_values(IEM)) for uid in (1, 2)]
    async with FakeMeterServer(meters) as server:
        results = await poll_meters({uid: server.config(uid) for uid in (1, 2)}, on_result=broken_callback)
    assert all(isinstance(result, MeterReading) for result in results.values())


async def test_poll_rejects_bad_concurrency_limit() -> None:
    with pytest.raises(ValueError, match="max_per_endpoint"):
        await poll_meters({}, max_per_endpoint=0)


async def test_poll_nothing() -> None:
    assert await poll_meters({}) == {}
