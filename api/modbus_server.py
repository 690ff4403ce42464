"""Modbus TCP server for BMS/PLCs (pymodbus): serves ``api.modbus_map`` and takes its writes.

The event loop never touches the database: reads are answered from an in-memory register image
that a refresh task rebuilds every second in a worker thread; a write is parsed on the loop and
applied in a worker thread through the API's services, then the image is rebuilt at once so the
PLC reads back what it wrote. Clients outside the allow-list are disconnected on connect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import close_old_connections
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from api import modbus_map
from evce import clock

log = logging.getLogger(__name__)

READ_CODES = (3, 4)
WRITE_CODES = (6, 16)
T = TypeVar("T")


@dataclass
class ServerOptions:
    host: str = "0.0.0.0"  # noqa: S104 - BMS/PLCs are on the LAN
    port: int = 5020
    unit_id: int = 1
    writable: bool = False
    allowed_clients: list[str] = field(default_factory=list)
    refresh_s: float = 1.0


def _in_thread(function: Callable[..., T], *args: Any) -> Coroutine[Any, Any, T]:
    """Run Django code in a worker thread with a healthy connection (threads are reused)."""

    def run() -> T:
        close_old_connections()
        return function(*args)

    return asyncio.to_thread(run)


class BemsContext(ModbusServerContext):
    """The datastore pymodbus calls, backed by the register image (no pymodbus sim devices)."""

    def __init__(self, options: ServerOptions) -> None:  # no super(): the base builds simulator devices
        self.options = options
        self.old_simulator = True
        self.simdevices = []
        self.image: dict[int, int] = {}
        self.watchdog_value = 0
        self._lock = asyncio.Lock()
        self._refreshes_started = 0
        self._image_generation = 0

    def device_ids(self) -> list[int]:
        return [self.options.unit_id]

    def _check_unit(self, device_id: int) -> None:
        if device_id not in (self.options.unit_id, 0):
            raise NoSuchIdException(f"unit id {device_id} is not served (this server is unit {self.options.unit_id})")

    async def refresh(self) -> None:
        """Rebuild the image; an older build finishing late never replaces a newer one.

        The periodic refresh and a write's refresh run concurrently: a periodic build that read the
        database before a write committed can finish after the write's own build, and would put the
        pre-write registers back until the next period.
        """
        self._refreshes_started += 1
        generation = self._refreshes_started
        image = await _in_thread(modbus_map.build_image, clock.now(), self.watchdog_value)
        if generation > self._image_generation:
            self.image, self._image_generation = image, generation

    async def async_getValues(self, device_id: int, func_code: int, address: int,  # noqa: N802 - pymodbus API
                              count: int = 1) -> list[int] | ExcCodes:
        self._check_unit(device_id)
        if func_code not in READ_CODES + WRITE_CODES:  # pymodbus reads back after a write
            return ExcCodes.ILLEGAL_FUNCTION
        if address < 0 or address + count - 1 > modbus_map.LAST_ADDRESS:
            return ExcCodes.ILLEGAL_ADDRESS
        image = self.image
        return [image.get(a, 0) for a in range(address, address + count)]

    async def async_setValues(self, device_id: int, func_code: int, address: int,  # noqa: N802 - pymodbus API
                              values: Sequence[int] | Sequence[bool]) -> ExcCodes | None:
        self._check_unit(device_id)
        if func_code not in WRITE_CODES or not self.options.writable:
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            write = modbus_map.parse_write(address, [int(v) for v in values])
            async with self._lock:  # writes in order, one at a time
                await _in_thread(modbus_map.apply_write, write, clock.now())
                if isinstance(write, int):
                    self.watchdog_value = write
                await self.refresh()
        except modbus_map.WriteRefused as refused:
            log.warning("Modbus write to %s refused: %s", address, refused)
            return ExcCodes(refused.code)
        except Exception:
            log.exception("Modbus write to %s failed", address)
            return ExcCodes.DEVICE_FAILURE
        return None


def client_allowed(peer: str, allowed: list[str]) -> bool:
    """Empty allow-list: everyone. Entries are addresses or networks (192.168.10.0/24)."""
    if not allowed:
        return True
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in allowed)


class FilteringHandler(ServerRequestHandler):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = peer[0] if peer else ""
        if not client_allowed(host, self.server.allowed_clients):
            log.warning("Modbus client %s refused (not in BEMS_MODBUS_ALLOWED_CLIENTS)", host)
            transport.close()
            return
        super().connection_made(transport)


class BemsModbusServer(ModbusTcpServer):
    def __init__(self, context: BemsContext, options: ServerOptions) -> None:
        super().__init__(context, address=(options.host, options.port))
        self.context = context
        self.allowed_clients = options.allowed_clients

    def callback_new_connection(self) -> ServerRequestHandler:
        return FilteringHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


async def serve(options: ServerOptions, started: asyncio.Event | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or forever); the image is refreshed every ``refresh_s``."""
    context = BemsContext(options)
    await context.refresh()
    server = BemsModbusServer(context, options)
    await server.serve_forever(background=True)
    log.info("Modbus TCP server on %s:%s, unit %s, %s", options.host, options.port, options.unit_id,
             "read-write" if options.writable else "read-only")
    if started is not None:
        started.set()
    stop = stop or asyncio.Event()
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), options.refresh_s)
            except TimeoutError:
                pass
            try:
                await context.refresh()
            except Exception:  # a database hiccup must not stop the server: the last image stays
                log.exception("Modbus register refresh failed")
    finally:
        await server.shutdown()
