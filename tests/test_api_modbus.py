"""The BEMS Modbus TCP server, read and written by a real pymodbus client over loopback."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from api import modbus_map as m
from api.budgets import active_zone_budgets
from api.modbus_server import ServerOptions, client_allowed, serve
from chargers.models import Charger
from tests import api_support
from tests.api_support import T0, make_integration, make_zone
from tests.conftest import wait_until
from tests.embedded_services import free_port
from transactions.models import Transaction, TransactionState

pytestmark = pytest.mark.django_db(transaction=True)
clock = api_support.clock
UNIT = 7


class RunningServer:
    """The server on its own event loop thread, like the management command runs it."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.started = asyncio.Event()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, name="bems-modbus", daemon=True)
        self.thread.start()
        wait_until(self.started.is_set, timeout_s=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(serve(self.options, started=self.started, stop=self.stop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


@pytest.fixture
def site(clock) -> dict[str, Any]:
    root = make_zone("Connection point", max_current_a=250, max_power_kw=150, measured_current_l1_a=120,
                     measured_current_l2_a=90, measured_current_l3_a=100, measured_power_kw=70, measured_at=T0)
    level = make_zone("Level -1", parent=root, max_current_a=125, max_power_kw=80)
    charger = Charger.objects.create(charge_point_id="CP-1", zone=level, connected=True)
    for connector in (1, 2):
        Transaction.objects.create(charger=charger, connector_id=connector, id_tag="T", start_time=T0,
                                   state=TransactionState.ACTIVE)
    return {"root": root, "level": level}


def start(**options: Any) -> Iterator[tuple[RunningServer, ModbusTcpClient]]:
    server = RunningServer(ServerOptions(host="127.0.0.1", port=free_port(), unit_id=UNIT, refresh_s=0.05,
                                         **options))
    client = ModbusTcpClient("127.0.0.1", port=server.options.port, timeout=3, retries=0)
    try:
        assert client.connect()
        yield server, client
    finally:
        client.close()
        server.close()


@pytest.fixture
def rw(site) -> Iterator[tuple[RunningServer, ModbusTcpClient]]:
    yield from start(writable=True)


@pytest.fixture
def ro(site) -> Iterator[tuple[RunningServer, ModbusTcpClient]]:
    yield from start(writable=False)


def read(client: ModbusTcpClient, address: int, count: int) -> list[int]:
    response = client.read_holding_registers(address, count=count, device_id=UNIT)
    assert not response.isError(), response
    return list(response.registers)


def read_float(client: ModbusTcpClient, address: int) -> float:
    high, low = read(client, address, 2)
    return m.words_float(high, low)


def write_float(client: ModbusTcpClient, address: int, value: float) -> Any:
    return client.write_registers(address, list(m.float_words(value)), device_id=UNIT)


def zone_address(index: int, offset: int) -> int:
    return m.ZONE_BASE + m.ZONE_STRIDE * index + offset


def test_a_client_reads_the_site_and_zone_registers(ro, site):
    _, client = ro
    header = read(client, 0, 4)
    assert header == [m.MAP_VERSION, 2, 2, 1]
    assert read_float(client, m.REG_SITE_POWER_KW) == 70
    assert [read_float(client, m.REG_SITE_CURRENT_A + 2 * p) for p in range(3)] == [120, 90, 100]
    assert read_float(client, m.REG_SITE_HEADROOM_A) == 130
    assert read(client, zone_address(1, m.OFF_ZONE_ID), 2) == [site["level"].pk, 0]  # configured
    assert read_float(client, zone_address(1, m.OFF_MAX_CURRENT_A)) == 125
    assert read(client, zone_address(1, m.OFF_SESSIONS), 1) == [2]
    assert math.isnan(read_float(client, zone_address(1, m.OFF_POWER_KW)))  # not measured
    assert client.read_input_registers(0, count=1, device_id=UNIT).registers == [m.MAP_VERSION]


def test_a_read_only_server_refuses_writes(ro, site):
    _, client = ro
    response = write_float(client, zone_address(0, m.OFF_SET_POWER_KW), 50)
    assert response.isError() and response.exception_code == 1  # illegal function
    assert active_zone_budgets([site["root"].pk], api_support.T0) == {}


def test_bad_addresses_and_units_are_modbus_exceptions(rw, site):
    _, client = rw
    assert client.read_holding_registers(m.LAST_ADDRESS, count=2, device_id=UNIT).exception_code == 2
    assert client.write_registers(zone_address(0, m.OFF_POWER_KW), [0, 0], device_id=UNIT).exception_code == 2
    assert client.write_register(zone_address(0, m.OFF_SET_POWER_KW), 1, device_id=UNIT).exception_code == 2
    assert write_float(client, zone_address(0, m.OFF_SET_POWER_KW), -5).exception_code == 3
    assert write_float(client, zone_address(150, m.OFF_SET_POWER_KW), 5).exception_code == 2
    assert client.read_holding_registers(0, count=1, device_id=UNIT + 1).isError()


def test_a_written_limit_is_a_budget_with_a_watchdog_and_failsafe(rw, site, clock):
    _, client = rw
    root = site["root"]
    assert not write_float(client, zone_address(0, m.OFF_SET_POWER_KW), 40).isError()
    budget = active_zone_budgets([root.pk], clock.now)[root.pk]
    assert (budget.source, budget.power_kw, budget.current_a) == ("setpoint", 40, None)
    assert "Modbus TCP" in budget.note
    assert read_float(client, zone_address(0, m.OFF_SET_POWER_KW)) == 40
    assert read(client, zone_address(0, m.OFF_SOURCE), 1) == [1]
    assert read_float(client, zone_address(0, m.OFF_LIMIT_POWER_KW)) == 40
    # The watchdog register keeps the integration alive …
    for tick in range(1, 4):
        clock.advance(60)
        assert not client.write_register(m.REG_WATCHDOG, tick, device_id=UNIT).isError()
    assert active_zone_budgets([root.pk], clock.now)[root.pk].source == "setpoint"
    assert read(client, m.REG_WATCHDOG, 1) == [3]
    # … and when the PLC stops writing it, the zone fails safe to its fallback.
    clock.advance(121)
    failsafe = active_zone_budgets([root.pk], clock.now)[root.pk]
    assert (failsafe.source, failsafe.current_a) == ("failsafe", 16.0)
    wait_until(lambda: read(client, zone_address(0, m.OFF_SOURCE), 1) == [2], timeout_s=5)
    assert read_float(client, zone_address(0, m.OFF_BUDGET_CURRENT_A)) == 16.0


def test_a_written_limit_expires_unless_written_again(rw, site, clock, settings):
    _, client = rw
    root = site["root"]
    write_float(client, zone_address(0, m.OFF_SET_CURRENT_A), 180)
    for _ in range(15):
        clock.advance(60)
        client.write_register(m.REG_WATCHDOG, 1, device_id=UNIT)
    assert active_zone_budgets([root.pk], clock.now) == {}  # 900 s later: expired, configured limits


def test_nan_gives_the_zone_back_and_another_integration_is_a_conflict(rw, site, clock):
    _, client = rw
    root, level = site["root"], site["level"]
    write_float(client, zone_address(0, m.OFF_SET_POWER_KW), 40)
    assert not write_float(client, zone_address(0, m.OFF_SET_POWER_KW), float("nan")).isError()
    assert active_zone_budgets([root.pk], clock.now) == {}
    _, token = make_integration("REST BMS")
    api_support.Api(token).put(f"zones/{level.pk}/setpoint", {"power_kw": 30, "duration_s": 600})
    assert write_float(client, zone_address(1, m.OFF_SET_POWER_KW), 60).exception_code == 4
    assert active_zone_budgets([level.pk], clock.now)[level.pk].power_kw == 30


def test_clients_outside_the_allow_list_are_disconnected(site):
    server = RunningServer(ServerOptions(host="127.0.0.1", port=free_port(), unit_id=UNIT,
                                         allowed_clients=["192.0.2.0/24"]))
    client = ModbusTcpClient("127.0.0.1", port=server.options.port, timeout=1, retries=0)
    try:
        client.connect()
        try:
            answered = not client.read_holding_registers(0, count=1, device_id=UNIT).isError()
        except (ModbusException, OSError):  # the server closed the connection
            answered = False
        assert not answered
    finally:
        client.close()
        server.close()
    assert client_allowed("127.0.0.1", ["127.0.0.0/8"]) and client_allowed("10.1.2.3", [])
    assert not client_allowed("10.1.2.3", ["192.0.2.7"]) and not client_allowed("not-an-ip", ["10.0.0.0/8"])


def test_an_allowed_client_reads(site):
    running = start(allowed_clients=["127.0.0.1"])
    _, client = next(running)
    try:
        assert read(client, 0, 1) == [m.MAP_VERSION]
    finally:
        running.close()


@pytest.mark.asyncio
async def test_a_late_periodic_refresh_never_puts_back_the_registers_of_before_a_write(monkeypatch):
    """The periodic build that read the database before a write finishes last: it is dropped."""
    from api import modbus_server

    first_may_finish = threading.Event()
    builds: list[int] = []

    def build_image(now: Any, watchdog: int) -> dict[int, int]:
        builds.append(watchdog)
        if len(builds) == 1:  # the periodic build: read before the write, slow to finish
            first_may_finish.wait(5)
        return {m.REG_WATCHDOG: watchdog}

    monkeypatch.setattr(modbus_server.modbus_map, "build_image", build_image)
    context = modbus_server.BemsContext(ServerOptions(host="127.0.0.1", port=0, unit_id=UNIT))
    periodic = asyncio.create_task(context.refresh())
    while not builds:
        await asyncio.sleep(0.001)
    context.watchdog_value = 5  # what the write's own refresh sees
    await context.refresh()
    assert context.image == {m.REG_WATCHDOG: 5}
    first_may_finish.set()
    await periodic
    assert context.image == {m.REG_WATCHDOG: 5}
