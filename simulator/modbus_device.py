"""Fake Schneider meters: real pymodbus servers on 127.0.0.1, for tests, benches and the simulator.

A :class:`FakeMeter` impersonates one device (one unit id) with the real
register layout of a :class:`~meters.registers.RegisterMap`: only the map's
registers exist, so a read over anything else gets a genuine IllegalAddress
exception. Values are encoded here with :mod:`struct`, independently of the
decoder under test, and can be changed while the server runs. Misbehaviour is
switched on per meter: ``silent`` (never answers), ``delay_s`` (slow answers,
with a :class:`ConcurrencyTracker` to observe overlap), ``exception_code`` (answers
every read with that Modbus exception), :meth:`FakeMeter.set_words` (NaN,
markers, garbage), ``omit`` (registers the device lacks).

A :class:`FakeMeterServer` hosts one or more meters on one TCP port, with
Modbus TCP framing or RTU framing (an RTU-over-TCP gateway); several unit ids
behind one server model a PowerTag Link gateway.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from meters.modbus import MeterConfig
from meters.registers import Register, RegisterMap

FramerName = Literal["socket", "rtu"]

_STRUCT_FORMATS = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float32": ">f",
}

# pymodbus logs every refused request at ERROR with frame dumps; fakes refuse on purpose.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def encode_value(value: float, data_type: str, word_order: str = "big") -> list[int]:
    """Encode a raw (unscaled) number the way a device puts it on the wire."""
    number: float = value if data_type == "float32" else round(value)
    packed = struct.pack(_STRUCT_FORMATS[data_type], number)
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
    return words if word_order == "big" else words[::-1]


class ConcurrencyTracker:
    """Counts requests being served at once, across the meters that share it."""

    def __init__(self) -> None:
        """Start idle."""
        self.in_flight = 0
        self.peak = 0

    def enter(self) -> None:
        """A request started."""
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        """A request finished."""
        self.in_flight -= 1


class FakeMeter:
    """One simulated device: register layout from a map, values in engineering units."""

    def __init__(
        self,
        register_map: RegisterMap,
        *,
        unit_id: int = 1,
        values: Mapping[str, float] | None = None,
        word_order: str | None = None,
        omit: Iterable[str] = (),
        silent: bool = False,
        delay_s: float = 0.0,
        tracker: ConcurrencyTracker | None = None,
    ) -> None:
        """``word_order`` forces the device's order (to test overrides); values of
        omitted quantities are ignored so one value set fits every variant."""
        self.register_map = register_map
        self.unit_id = unit_id
        self.word_order = word_order
        omitted = set(omit)
        self.registers = tuple(r for r in register_map.registers if r.quantity not in omitted)
        self.silent = silent
        self.delay_s = delay_s
        self.tracker = tracker or ConcurrencyTracker()
        self.exception_code: int | None = None
        self.requests = 0
        self._words: dict[int, int] = {}
        self._release = asyncio.Event()
        self.set_values({q: v for q, v in (values or {}).items() if q not in omitted})

    def _register(self, quantity: str) -> Register:
        """Register of a quantity this device has."""
        for reg in self.registers:
            if reg.quantity == quantity:
                return reg
        raise KeyError(f"fake {self.register_map.key} unit {self.unit_id} has no {quantity!r}")

    def order_of(self, reg: Register) -> str:
        """Word order the device uses for ``reg``."""
        return self.word_order or reg.word_order or self.register_map.word_order

    def set_value(self, quantity: str, value: float) -> None:
        """Store an engineering value (W, A, V, Hz, Wh): divided by scale, encoded."""
        reg = self._register(quantity)
        self.set_words(quantity, encode_value(value / reg.scale, reg.data_type, self.order_of(reg)))

    def set_values(self, values: Mapping[str, float]) -> None:
        """Several :meth:`set_value` at once."""
        for quantity, value in values.items():
            self.set_value(quantity, value)

    def set_words(self, quantity: str, words: Sequence[int]) -> None:
        """Store raw registers, e.g. ``[0xFFC0, 0x0000]`` (Schneider float NaN)."""
        reg = self._register(quantity)
        if len(words) != reg.word_count:
            raise ValueError(f"{quantity} takes {reg.word_count} registers, got {len(words)}")
        for offset, word in enumerate(words):
            self._words[reg.address + offset] = word

    def release(self) -> None:
        """Let requests parked by ``silent`` finish (used at shutdown)."""
        self._release.set()

    def revive(self) -> None:
        """End ``silent``: parked requests are released and later ones served again."""
        self.silent = False
        self._release.set()
        self._release = asyncio.Event()

    def sim_device(self) -> SimDevice:
        """pymodbus device: only this meter's registers exist (others are invalid)."""
        blocks = [SimData(r.address, count=r.word_count, values=0, datatype=DataType.REGISTERS) for r in self.registers]
        return SimDevice(id=self.unit_id, simdata=blocks, action=self._on_access)

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: Any,
    ) -> ExcCodes | None:
        """Called by the server on each valid access: misbehave or serve current values."""
        del function_code, set_values
        self.requests += 1
        self.tracker.enter()
        try:
            if self.silent:
                await self._release.wait()
                return ExcCodes.DEVICE_BUSY
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        finally:
            self.tracker.leave()
        if self.exception_code is not None:
            return ExcCodes(self.exception_code)
        for wire in range(address, address + count):
            if wire in self._words:
                registers[wire - start_address] = self._words[wire]
        return None


class FakeMeterServer:
    """A running Modbus TCP server (TCP or RTU framing) hosting fake meters."""

    def __init__(
        self, meters: Sequence[FakeMeter], *, framer: FramerName = "socket", host: str = "127.0.0.1", port: int = 0
    ) -> None:
        """Unit ids must be distinct: they select the meter, as behind a gateway. Port 0: any free one."""
        ids = [meter.unit_id for meter in meters]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate unit ids {ids}")
        self.meters = list(meters)
        self.framer = framer
        self.host = host
        self.port = port
        self._server: ModbusTcpServer | None = None

    async def start(self) -> FakeMeterServer:
        """Listen (on a free port chosen by the OS unless one was given) and serve in the background.

        Idempotent, so ``async with await start_fake_meter(...)`` is fine.
        """
        if self._server is not None:
            return self
        framer = FramerType.RTU if self.framer == "rtu" else FramerType.SOCKET
        devices = [meter.sim_device() for meter in self.meters]
        self._server = ModbusTcpServer(devices, framer=framer, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        self.port = self._server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        """Release parked requests, close the listener and all connections."""
        for meter in self.meters:
            meter.release()
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        await asyncio.sleep(0)

    async def __aenter__(self) -> FakeMeterServer:
        """``async with FakeMeterServer(...) as server:``."""
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        """Always stop, even when the test failed."""
        await self.stop()

    def meter(self, unit_id: int | None = None) -> FakeMeter:
        """The meter at ``unit_id`` (default: the only/first one)."""
        if unit_id is None:
            return self.meters[0]
        return next(m for m in self.meters if m.unit_id == unit_id)

    def config(self, unit_id: int | None = None, **overrides: Any) -> MeterConfig:
        """A :class:`MeterConfig` that reaches ``unit_id`` on this server.

        Transport follows the framing; pass ``transport="rtu_serial"`` to go
        through pymodbus' serial client using a ``socket://`` pyserial URL.
        """
        meter = self.meter(unit_id)
        settings: dict[str, Any] = {
            "register_map": meter.register_map,
            "transport": "rtu_over_tcp" if self.framer == "rtu" else "tcp",
            "host": self.host,
            "port": self.port,
            "unit_id": meter.unit_id,
            "timeout_s": 1.0,
        }
        settings.update(overrides)
        if settings["transport"] == "rtu_serial":
            settings.setdefault("serial_device", f"socket://{self.host}:{self.port}")
        return MeterConfig(**settings)


async def start_fake_meter(
    register_map: RegisterMap,
    values: Mapping[str, float] | None = None,
    *,
    unit_id: int = 1,
    framer: FramerName = "socket",
    **meter_options: Any,
) -> FakeMeterServer:
    """One meter on its own server, started."""
    meter = FakeMeter(register_map, unit_id=unit_id, values=values, **meter_options)
    return await FakeMeterServer([meter], framer=framer).start()


def closed_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on (bound then released), for connection-refused tests."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


#: Plausible values for a 3-phase 22 kW charger feeder, in engineering units.
TYPICAL_VALUES: Mapping[str, float] = {
    "current_l1_a": 31.5,
    "current_l2_a": 30.25,
    "current_l3_a": 29.75,
    "voltage_l1_v": 230.5,
    "voltage_l2_v": 231.0,
    "voltage_l3_v": 229.5,
    "power_l1_w": 7250.0,
    "power_l2_w": 6980.0,
    "power_l3_w": 6830.0,
    "power_w": 21060.0,
    "frequency_hz": 50.0,
    "energy_import_wh": 123_456_789.0,
    "energy_export_wh": 4_321.0,
}


def typical_values(register_map: RegisterMap) -> dict[str, float]:
    """TYPICAL_VALUES restricted to what ``register_map`` provides."""
    return {q: TYPICAL_VALUES[q] for q in register_map.quantities}
