"""Asynchronous meter reading over Modbus (TCP, RTU over TCP, RTU serial).

The load manager must never act on a made-up number: a value that cannot be
decoded, is a Schneider "not available" marker, NaN/inf or physically absurd is
reported as an error with its reason, never returned as a reading. Failures of
a whole meter surface as typed :class:`MeterError` subclasses so the caller can
fall back to its conservative limit (see shared/DOMAIN.md, "meter loss").

Layout:
- pure decoding: :func:`decode_raw`, :func:`decode_register`;
- request planning: :func:`plan_reads` (few block reads, <= 125 registers each);
- I/O: :func:`read_meter` (one meter, bounded by its own timeout) and
  :func:`poll_meters` (many meters concurrently, one slow meter delays nobody).
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar, get_args

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from meters.registers import (
    DATA_TYPE_WORDS,
    WORD_ORDERS,
    DataType,
    Register,
    RegisterMap,
    WordOrder,
)

logger = logging.getLogger(__name__)

Transport = Literal["tcp", "rtu_over_tcp", "rtu_serial"]
TRANSPORTS: Final[tuple[str, ...]] = get_args(Transport)

#: Modbus limit for one read of holding/input registers (spec: 125 words).
MAX_REGISTERS_PER_READ: Final = 125
#: Beyond this magnitude (after scaling) a value is garbage, not a measurement.
PLAUSIBILITY_LIMIT: Final = 1e12

#: Schneider "not available / not applicable" encodings of integer registers.
NOT_AVAILABLE: Final[Mapping[str, int]] = {
    "int16": 0x8000,
    "uint16": 0xFFFF,
    "int32": 0x8000_0000,
    "uint32": 0xFFFF_FFFF,
    "int64": 0x8000_0000_0000_0000,
    "uint64": 0xFFFF_FFFF_FFFF_FFFF,
}

EXCEPTION_NAMES: Final[Mapping[int, str]] = {
    1: "IllegalFunction",
    2: "IllegalDataAddress",
    3: "IllegalDataValue",
    4: "ServerDeviceFailure",
    5: "Acknowledge",
    6: "ServerDeviceBusy",
    8: "MemoryParityError",
    10: "GatewayPathUnavailable",
    11: "GatewayTargetDeviceFailedToRespond",
}
#: Codes meaning "the device behind the gateway is unreachable": stop reading it.
GATEWAY_EXCEPTION_CODES: Final = frozenset({10, 11})


# --------------------------------------------------------------------------- #
# Errors                                                                       #
# --------------------------------------------------------------------------- #
class MeterError(Exception):
    """A whole meter could not be read; the message names the meter."""


class MeterTimeout(MeterError):
    """No complete answer within the meter's ``timeout_s``."""


class MeterConnectionError(MeterError):
    """Could not open (or lost) the TCP connection / serial port."""


class MeterModbusError(MeterError):
    """The device answered with a Modbus exception response."""

    def __init__(self, message: str, exception_code: int, function_code: int = 0, address: int = 0):
        """Keep the code so callers can tell a wrong map (2) from a dead tag (11)."""
        super().__init__(message)
        self.exception_code = exception_code
        self.function_code = function_code
        self.address = address


class MeterDataError(MeterError):
    """The device answered, but nothing usable (NaN, markers, garbage)."""


class ValueRejected(ValueError):
    """One value failed decoding or plausibility; ``str()`` is the reason."""


# --------------------------------------------------------------------------- #
# Configuration and results                                                    #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class MeterConfig:
    """How to reach one meter and which register map to read.

    ``word_order`` overrides the map (and per-register orders) for gateways that
    swap words. ``max_gap_registers`` lets one request span small unused gaps;
    keep it 0 unless the device is known to answer reads over reserved registers.
    For ``rtu_serial`` the device may also be a pyserial URL (``socket://h:p``).
    """

    register_map: RegisterMap
    transport: Transport = "tcp"
    host: str = ""
    port: int = 502
    serial_device: str = ""
    baudrate: int = 19200
    parity: Literal["N", "E", "O"] = "E"
    stopbits: int = 1
    bytesize: int = 8
    unit_id: int = 1
    timeout_s: float = 2.0
    word_order: WordOrder | None = None
    max_gap_registers: int = 0

    def __post_init__(self) -> None:
        """Refuse configurations that could only fail later, obscurely."""
        problems = _config_problems(self)
        if problems:
            raise ValueError(f"meter config ({self.describe()}): " + "; ".join(problems))

    @property
    def endpoint(self) -> tuple[str, str, int]:
        """Physical channel; meters sharing it share a gateway or a bus."""
        if self.transport == "rtu_serial":
            return ("serial", self.serial_device, 0)
        return ("tcp", self.host, self.port)

    def describe(self) -> str:
        """Short human label used in every error message."""
        where = self.serial_device if self.transport == "rtu_serial" else f"{self.host}:{self.port}"
        return f"{self.register_map.key} {self.transport} {where} unit {self.unit_id}"


def _config_problems(config: MeterConfig) -> list[str]:
    """List configuration mistakes; empty when usable."""
    problems: list[str] = []
    if config.transport not in TRANSPORTS:
        problems.append(f"unknown transport {config.transport!r} (expected one of: {', '.join(TRANSPORTS)})")
    elif config.transport == "rtu_serial":
        problems += _serial_problems(config)
    else:
        problems += _tcp_problems(config)
    if not (isinstance(config.timeout_s, (int, float)) and math.isfinite(config.timeout_s) and config.timeout_s > 0):
        problems.append(f"timeout_s must be a positive number of seconds, got {config.timeout_s!r}")
    if config.word_order is not None and config.word_order not in WORD_ORDERS:
        problems.append(f"unknown word order {config.word_order!r} (expected big or little)")
    if not 0 <= config.max_gap_registers < MAX_REGISTERS_PER_READ:
        problems.append(f"max_gap_registers must be 0..124, got {config.max_gap_registers!r}")
    return problems


def _tcp_problems(config: MeterConfig) -> list[str]:
    """Checks for Modbus TCP and RTU-over-TCP endpoints."""
    problems: list[str] = []
    if not config.host:
        problems.append("host is required for TCP transports")
    if not 1 <= config.port <= 65535:
        problems.append(f"port must be 1..65535, got {config.port!r}")
    if not 0 <= config.unit_id <= 255:
        problems.append(f"unit_id must be 0..255, got {config.unit_id!r}")
    return problems


def _serial_problems(config: MeterConfig) -> list[str]:
    """Checks for an RS-485 line (1..247 are the only addressable slaves)."""
    problems: list[str] = []
    if not config.serial_device:
        problems.append("serial_device is required for rtu_serial")
    if not 1 <= config.unit_id <= 247:
        problems.append(f"unit_id must be 1..247 on a serial line, got {config.unit_id!r}")
    if config.parity not in ("N", "E", "O"):
        problems.append(f"parity must be N, E or O, got {config.parity!r}")
    if config.stopbits not in (1, 2):
        problems.append(f"stopbits must be 1 or 2, got {config.stopbits!r}")
    if config.bytesize not in (7, 8):
        problems.append(f"bytesize must be 7 or 8, got {config.bytesize!r}")
    if config.baudrate <= 0:
        problems.append(f"baudrate must be positive, got {config.baudrate!r}")
    return problems


@dataclass(frozen=True)
class QuantityError:
    """Why one quantity of an otherwise readable meter has no value."""

    quantity: str
    reason: str


@dataclass(frozen=True)
class MeterReading:
    """Decoded values (SI units, keyed by quantity) and per-quantity failures.

    A quantity is either in ``values`` or in ``errors``, never both; callers that
    need, say, ``power_w`` must treat its absence as a missing measurement.
    """

    timestamp: float
    meter_type: str
    values: dict[str, float] = field(default_factory=dict)
    errors: tuple[QuantityError, ...] = ()


# --------------------------------------------------------------------------- #
# Pure decoding                                                                #
# --------------------------------------------------------------------------- #
def _words_to_bytes(words: Sequence[int], word_order: WordOrder) -> bytes:
    """Join 16-bit words (each big-endian) in wire order into big-endian bytes."""
    for word in words:
        if not 0 <= word <= 0xFFFF:
            raise ValueRejected(f"register value {word!r} is not a 16-bit word")
    ordered = words if word_order == "big" else list(reversed(words))
    return b"".join(word.to_bytes(2, "big") for word in ordered)


def decode_raw(words: Sequence[int], data_type: DataType, word_order: WordOrder = "big") -> int | float:
    """Decode registers to the raw number, rejecting NaN/inf and Schneider N/A markers.

    ``word_order`` "big" means the most significant word comes first (Schneider
    default); "little" means the least significant word comes first.
    """
    size = DATA_TYPE_WORDS.get(data_type)
    if size is None:
        raise ValueRejected(f"unknown data type {data_type!r}")
    if len(words) != size:
        raise ValueRejected(f"{data_type} needs {size} registers, got {len(words)}")
    raw = _words_to_bytes(words, word_order)
    if data_type == "float32":
        return _decode_float32(raw)
    bits = int.from_bytes(raw, "big")
    if bits == NOT_AVAILABLE[data_type]:
        raise ValueRejected(f"{data_type} 0x{bits:0{size * 4}X} is the device's 'not available' marker")
    return int.from_bytes(raw, "big", signed=data_type.startswith("int"))


def _decode_float32(raw: bytes) -> float:
    """IEEE float; NaN (e.g. Schneider 0xFFC00000) and inf are refusals, not values."""
    value: float = struct.unpack(">f", raw)[0]
    if math.isnan(value):
        raise ValueRejected(f"float32 NaN (0x{raw.hex().upper()}): the device reports no valid value")
    if math.isinf(value):
        raise ValueRejected(f"float32 infinity (0x{raw.hex().upper()})")
    return value


def decode_register(words: Sequence[int], register: Register, word_order: WordOrder = "big") -> float:
    """Decode, scale to SI units and check plausibility of one register's value."""
    value = decode_raw(words, register.data_type, word_order) * register.scale
    if not math.isfinite(value) or abs(value) > PLAUSIBILITY_LIMIT:
        raise ValueRejected(f"value {value:g} is beyond the plausibility limit of {PLAUSIBILITY_LIMIT:g}")
    return float(value)


def effective_word_order(config: MeterConfig, register: Register) -> WordOrder:
    """Config override, else the register's own order, else the map default."""
    return config.word_order or register.word_order or config.register_map.word_order


# --------------------------------------------------------------------------- #
# Request planning                                                             #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class ReadBlock:
    """One Modbus read request covering several registers."""

    function_code: int
    address: int
    count: int
    registers: tuple[Register, ...]


def plan_reads(
    registers: Sequence[Register], *, max_gap: int = 0, max_count: int = MAX_REGISTERS_PER_READ
) -> list[ReadBlock]:
    """Group registers into as few reads as possible (fewer round trips per poll).

    Registers are merged when they are contiguous (or separated by at most
    ``max_gap`` unused words) and the block stays within ``max_count`` words.
    """
    blocks: list[ReadBlock] = []
    for function_code in sorted({reg.function_code for reg in registers}):
        ordered = sorted((r for r in registers if r.function_code == function_code), key=lambda r: r.address)
        blocks += _merge(function_code, ordered, max_gap, max_count)
    return blocks


def _merge(function_code: int, ordered: list[Register], max_gap: int, max_count: int) -> list[ReadBlock]:
    """Greedy left-to-right merge of address-sorted registers of one function code."""
    blocks: list[ReadBlock] = []
    group: list[Register] = []
    start = end = 0
    for reg in ordered:
        if group and reg.address <= end + max_gap and max(end, reg.end) - start <= max_count:
            group.append(reg)
            end = max(end, reg.end)
            continue
        if group:
            blocks.append(ReadBlock(function_code, start, end - start, tuple(group)))
        group, start, end = [reg], reg.address, reg.end
    if group:
        blocks.append(ReadBlock(function_code, start, end - start, tuple(group)))
    return blocks


# --------------------------------------------------------------------------- #
# I/O                                                                          #
# --------------------------------------------------------------------------- #
def _make_client(config: MeterConfig) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    """Fresh client, no automatic reconnects or retries: the poll loop retries.

    pymodbus' own timeout is set longer than ours so that our deadline (which
    covers connect + all requests) is always the one that fires.
    """
    library_timeout = config.timeout_s * 2 + 1
    if config.transport == "rtu_serial":
        return AsyncModbusSerialClient(
            config.serial_device,
            framer=FramerType.RTU,
            baudrate=config.baudrate,
            bytesize=config.bytesize,
            parity=config.parity,
            stopbits=config.stopbits,
            timeout=library_timeout,
            retries=0,
            reconnect_delay=0,
        )
    framer = FramerType.RTU if config.transport == "rtu_over_tcp" else FramerType.SOCKET
    return AsyncModbusTcpClient(
        config.host,
        port=config.port,
        framer=framer,
        timeout=library_timeout,
        retries=0,
        reconnect_delay=0,
    )


async def read_meter(config: MeterConfig, now: float | None = None) -> MeterReading:
    """Read every register of ``config``'s map within ``config.timeout_s``.

    Returns a reading as soon as at least one quantity decoded; per-quantity
    problems are listed in ``errors``. Raises :class:`MeterTimeout`,
    :class:`MeterConnectionError`, :class:`MeterModbusError` (every block
    refused, or a gateway says the device is unreachable) or
    :class:`MeterDataError` (answers, but no usable value).
    ``now`` stamps the reading; default is the time the read completed.
    """
    client = _make_client(config)
    try:
        async with asyncio.timeout(config.timeout_s):
            await _connect(client, config)
            values, errors = await _read_all(client, config)
    except TimeoutError:
        raise MeterTimeout(f"{config.describe()}: no answer within {config.timeout_s:g} s") from None
    except ConnectionException as exc:
        raise MeterConnectionError(f"{config.describe()}: connection failed ({exc})") from None
    except ModbusException as exc:
        raise MeterDataError(f"{config.describe()}: invalid response ({exc})") from None
    except OSError as exc:
        raise MeterConnectionError(f"{config.describe()}: {exc}") from None
    finally:
        client.close()
    return MeterReading(
        timestamp=time.time() if now is None else now,
        meter_type=config.register_map.key,
        values=values,
        errors=tuple(errors),
    )


async def _connect(client: AsyncModbusTcpClient | AsyncModbusSerialClient, config: MeterConfig) -> None:
    """Open the connection; pymodbus reports failure as False, we as an error."""
    if not await client.connect():
        raise MeterConnectionError(f"{config.describe()}: cannot connect")


async def _read_all(
    client: AsyncModbusTcpClient | AsyncModbusSerialClient, config: MeterConfig
) -> tuple[dict[str, float], list[QuantityError]]:
    """Read all blocks; keep going past refused blocks, stop on unreachable device."""
    values: dict[str, float] = {}
    errors: list[QuantityError] = []
    refused: list[MeterModbusError] = []
    for block in plan_reads(config.register_map.registers, max_gap=config.max_gap_registers):
        try:
            words = await _read_block(client, config, block)
        except MeterModbusError as exc:
            if exc.exception_code in GATEWAY_EXCEPTION_CODES:
                raise
            refused.append(exc)
            errors += [QuantityError(reg.quantity, str(exc)) for reg in block.registers]
            continue
        _decode_block(config, block, words, values, errors)
    if not values:
        _raise_nothing_usable(config, refused, errors)
    return values, errors


def _raise_nothing_usable(config: MeterConfig, refused: list[MeterModbusError], errors: list[QuantityError]) -> None:
    """A meter that yields no value at all is a failed meter, with the reasons."""
    if refused:
        first = refused[0]
        raise MeterModbusError(
            f"{config.describe()}: every read refused; first: {first}",
            first.exception_code,
            first.function_code,
            first.address,
        )
    reasons = "; ".join(f"{err.quantity}: {err.reason}" for err in errors)
    raise MeterDataError(f"{config.describe()}: no usable value ({reasons})")


async def _read_block(
    client: AsyncModbusTcpClient | AsyncModbusSerialClient, config: MeterConfig, block: ReadBlock
) -> list[int]:
    """One request; exception responses become :class:`MeterModbusError`."""
    read = client.read_holding_registers if block.function_code == 3 else client.read_input_registers
    response = await read(block.address, count=block.count, device_id=config.unit_id)
    if response.isError():
        code = int(getattr(response, "exception_code", 0))
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        raise MeterModbusError(
            f"{config.describe()}: exception {code} ({name}) reading FC{block.function_code} "
            f"{block.address}+{block.count}",
            code,
            block.function_code,
            block.address,
        )
    words = list(response.registers)
    if len(words) < block.count:
        raise MeterDataError(f"{config.describe()}: asked {block.count} registers at {block.address}, got {len(words)}")
    return words


def _decode_block(
    config: MeterConfig,
    block: ReadBlock,
    words: list[int],
    values: dict[str, float],
    errors: list[QuantityError],
) -> None:
    """Decode each register of a block into ``values`` or ``errors``."""
    for reg in block.registers:
        offset = reg.address - block.address
        chunk = words[offset : offset + reg.word_count]
        try:
            values[reg.quantity] = decode_register(chunk, reg, effective_word_order(config, reg))
        except ValueRejected as exc:
            errors.append(QuantityError(reg.quantity, f"register {reg.address}: {exc}"))


# --------------------------------------------------------------------------- #
# Polling many meters                                                          #
# --------------------------------------------------------------------------- #
K = TypeVar("K", bound=Hashable)
ResultCallback = Callable[[K, "MeterReading | MeterError"], None]


async def poll_meters(
    configs: Mapping[K, MeterConfig],
    now: float | None = None,
    *,
    max_per_endpoint: int = 4,
    on_result: ResultCallback[K] | None = None,
) -> dict[K, MeterReading | MeterError]:
    """Read all meters concurrently; each failure is returned, never raised.

    Every meter runs under its own ``timeout_s``, so a silent meter costs only
    its own slot. Meters sharing an endpoint (a gateway, a serial bus) are
    limited to ``max_per_endpoint`` simultaneous connections, and a serial bus
    to one, because gateways cap connections and a bus is half-duplex.
    ``on_result`` is called as each meter finishes (e.g. to publish early).
    """
    if max_per_endpoint < 1:
        raise ValueError(f"max_per_endpoint must be >= 1, got {max_per_endpoint}")
    gates = _endpoint_gates(configs.values(), max_per_endpoint)

    async def poll_one(key: K, config: MeterConfig) -> tuple[K, MeterReading | MeterError]:
        async with gates[config.endpoint]:
            result = await _read_or_error(config, now)
        if on_result is not None:
            _notify(on_result, key, result)
        return key, result

    pairs = await asyncio.gather(*(poll_one(key, config) for key, config in configs.items()))
    return dict(pairs)


def _notify(on_result: ResultCallback[K], key: K, result: MeterReading | MeterError) -> None:
    """A failing callback must not cost the other meters their readings."""
    try:
        on_result(key, result)
    except Exception:  # the caller's bug, logged; polling goes on
        logger.exception("on_result callback failed for %r", key)


def _endpoint_gates(
    configs: Iterable[MeterConfig], max_per_endpoint: int
) -> dict[tuple[str, str, int], asyncio.Semaphore]:
    """One semaphore per physical channel."""
    gates: dict[tuple[str, str, int], asyncio.Semaphore] = {}
    for config in configs:
        limit = 1 if config.endpoint[0] == "serial" else max_per_endpoint
        gates.setdefault(config.endpoint, asyncio.Semaphore(limit))
    return gates


async def _read_or_error(config: MeterConfig, now: float | None) -> MeterReading | MeterError:
    """Never let one meter's failure - even a bug - lose the other readings."""
    try:
        return await read_meter(config, now)
    except MeterError as exc:
        return exc
    except Exception as exc:  # isolate the fault (even a bug) to this meter
        logger.exception("unexpected error reading %s", config.describe())
        return MeterError(f"{config.describe()}: unexpected {type(exc).__name__}: {exc}")
