"""Modbus register maps of the supported meters, kept as declarative data.

Each meter type is one table (a :class:`RegisterMap`) rather than code, so adding
or correcting a meter means editing data that can be checked line by line
against the manufacturer's register list it cites. Every address stored here is
the *wire* address (what travels in the Modbus frame), which for Schneider
documents is the documented register number minus one; tables are written with
:meth:`Register.documented` so the numbers in this file match the documents.

Values are converted to SI-ish units by ``scale`` (raw × scale): W, A, V, Hz, Wh.

Nothing in this module talks to the network; :mod:`meters.modbus` does that.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

# --------------------------------------------------------------------------- #
# Quantities: the names the rest of the controller uses for measurements.      #
# --------------------------------------------------------------------------- #
POWER_W: Final = "power_w"
POWER_L1_W: Final = "power_l1_w"
POWER_L2_W: Final = "power_l2_w"
POWER_L3_W: Final = "power_l3_w"
CURRENT_L1_A: Final = "current_l1_a"
CURRENT_L2_A: Final = "current_l2_a"
CURRENT_L3_A: Final = "current_l3_a"
VOLTAGE_L1_V: Final = "voltage_l1_v"
VOLTAGE_L2_V: Final = "voltage_l2_v"
VOLTAGE_L3_V: Final = "voltage_l3_v"
FREQUENCY_HZ: Final = "frequency_hz"
ENERGY_IMPORT_WH: Final = "energy_import_wh"
ENERGY_EXPORT_WH: Final = "energy_export_wh"

#: SI unit of each quantity once ``scale`` has been applied.
QUANTITY_UNITS: Final[Mapping[str, str]] = {
    POWER_W: "W",
    POWER_L1_W: "W",
    POWER_L2_W: "W",
    POWER_L3_W: "W",
    CURRENT_L1_A: "A",
    CURRENT_L2_A: "A",
    CURRENT_L3_A: "A",
    VOLTAGE_L1_V: "V",
    VOLTAGE_L2_V: "V",
    VOLTAGE_L3_V: "V",
    FREQUENCY_HZ: "Hz",
    ENERGY_IMPORT_WH: "Wh",
    ENERGY_EXPORT_WH: "Wh",
}
QUANTITIES: Final[tuple[str, ...]] = tuple(QUANTITY_UNITS)

DataType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32"]
WordOrder = Literal["big", "little"]

#: Number of 16-bit registers each data type occupies.
DATA_TYPE_WORDS: Final[Mapping[str, int]] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
}
DATA_TYPES: Final[tuple[str, ...]] = get_args(DataType)
WORD_ORDERS: Final[tuple[str, ...]] = get_args(WordOrder)
FUNCTION_CODES: Final[tuple[int, ...]] = (3, 4)
_ADDRESS_SPACE: Final = 0x10000


def _is_int(value: object) -> bool:
    """True for real integers; bools are ints in Python but never an address."""
    return isinstance(value, int) and not isinstance(value, bool)


def _choices(options: tuple[object, ...]) -> str:
    """Render allowed values for an error message."""
    return ", ".join(str(option) for option in options)


@dataclass(frozen=True)
class Register:
    """Where one quantity lives on the wire and how to turn it into SI units.

    ``word_order`` is only set when this register differs from its map's default
    (some devices mix orders); ``None`` means "use the map's / config's order".
    ``note`` carries doubts worth reading at commissioning time.
    """

    quantity: str
    address: int
    data_type: DataType
    scale: float = 1.0
    unit: str = ""
    function_code: int = 3
    word_order: WordOrder | None = None
    note: str = ""

    def __post_init__(self) -> None:
        """Reject impossible registers when the table is built, not at 3 a.m."""
        problems = _register_problems(self)
        if problems:
            raise ValueError(f"{self.quantity}: " + "; ".join(problems))

    @classmethod
    def documented(
        cls,
        quantity: str,
        register: int,
        data_type: DataType,
        scale: float = 1.0,
        unit: str = "",
        **kwargs: Any,
    ) -> Register:
        """Build from the 1-based register number printed in Schneider tables."""
        if not _is_int(register) or register < 1:
            raise ValueError(f"{quantity}: documented register must be an integer >= 1, got {register!r}")
        return cls(quantity, register - 1, data_type, scale, unit, **kwargs)

    @property
    def word_count(self) -> int:
        """Registers occupied on the wire."""
        return DATA_TYPE_WORDS[self.data_type]

    @property
    def end(self) -> int:
        """First wire address after this value (exclusive bound)."""
        return self.address + self.word_count


def _register_problems(reg: Register) -> list[str]:
    """List what is wrong with a register; empty when it is usable."""
    problems: list[str] = []
    if reg.quantity not in QUANTITY_UNITS:
        problems.append(f"unknown quantity {reg.quantity!r} (expected one of: {_choices(QUANTITIES)})")
    if reg.data_type not in DATA_TYPE_WORDS:
        problems.append(f"unknown data type {reg.data_type!r} (expected one of: {_choices(DATA_TYPES)})")
    elif not _is_int(reg.address) or reg.address < 0:
        problems.append(f"address must be an integer >= 0 (wire address), got {reg.address!r}")
    elif reg.end > _ADDRESS_SPACE:
        problems.append(f"registers {reg.address}..{reg.end - 1} exceed the 16-bit address space")
    if isinstance(reg.scale, bool) or not isinstance(reg.scale, (int, float)):
        problems.append(f"scale must be a number, got {reg.scale!r}")
    elif not math.isfinite(reg.scale) or reg.scale == 0:
        problems.append(f"scale must be finite and non-zero, got {reg.scale!r}")
    if reg.function_code not in FUNCTION_CODES:
        problems.append(f"function code must be 3 (holding) or 4 (input), got {reg.function_code!r}")
    if reg.word_order is not None and reg.word_order not in WORD_ORDERS:
        problems.append(f"unknown word order {reg.word_order!r} (expected one of: {_choices(WORD_ORDERS)})")
    return problems


@dataclass(frozen=True)
class RegisterMap:
    """Register layout of one meter type plus the document it was taken from."""

    key: str
    label: str
    source: str
    registers: tuple[Register, ...]
    word_order: WordOrder = "big"

    def __post_init__(self) -> None:
        """Catch duplicated quantities and overlapping registers (typical typos)."""
        if not self.registers:
            raise ValueError(f"{self.key}: a register map needs at least one register")
        if self.word_order not in WORD_ORDERS:
            raise ValueError(
                f"{self.key}: unknown word order {self.word_order!r} (expected one of: {_choices(WORD_ORDERS)})"
            )
        _check_unique_quantities(self.key, self.registers)
        _check_no_overlap(self.key, self.registers)

    @property
    def quantities(self) -> tuple[str, ...]:
        """Quantities this meter type provides, in table order."""
        return tuple(reg.quantity for reg in self.registers)

    def register_for(self, quantity: str) -> Register:
        """Register of ``quantity``; KeyError names what the map does provide."""
        for reg in self.registers:
            if reg.quantity == quantity:
                return reg
        raise KeyError(f"{self.key} has no register for {quantity!r} (has: {_choices(self.quantities)})")


def _check_unique_quantities(key: str, registers: tuple[Register, ...]) -> None:
    """One register per quantity, otherwise which one is read is ambiguous."""
    seen: set[str] = set()
    for reg in registers:
        if reg.quantity in seen:
            raise ValueError(f"{key}: quantity {reg.quantity!r} is listed twice")
        seen.add(reg.quantity)


def _check_no_overlap(key: str, registers: tuple[Register, ...]) -> None:
    """Two quantities sharing words is almost always an address typo."""
    ordered = sorted(registers, key=lambda reg: (reg.function_code, reg.address))
    for first, second in itertools.pairwise(ordered):
        if first.function_code == second.function_code and second.address < first.end:
            raise ValueError(
                f"{key}: {first.quantity} ({first.address}..{first.end - 1}) and "
                f"{second.quantity} ({second.address}..{second.end - 1}) overlap "
                f"(function code {first.function_code})"
            )


_doc = Register.documented

# --------------------------------------------------------------------------- #
# Built-in tables. Register numbers below are the documented (1-based) ones.   #
# --------------------------------------------------------------------------- #

IEM3X5X: Final = RegisterMap(
    key="iem3x5x",
    label="Schneider iEM3155 / iEM3255 / iEM3355 (iEM3000 series, Modbus)",
    source="iEM3100/iEM3200/iEM3300 series user manual DOCA0005EN, Modbus register list",
    registers=(
        _doc(CURRENT_L1_A, 3000, "float32", 1.0, "A"),
        _doc(CURRENT_L2_A, 3002, "float32", 1.0, "A"),
        _doc(CURRENT_L3_A, 3004, "float32", 1.0, "A"),
        _doc(VOLTAGE_L1_V, 3028, "float32", 1.0, "V"),
        _doc(VOLTAGE_L2_V, 3030, "float32", 1.0, "V"),
        _doc(VOLTAGE_L3_V, 3032, "float32", 1.0, "V"),
        _doc(POWER_L1_W, 3054, "float32", 1000.0, "kW"),
        _doc(POWER_L2_W, 3056, "float32", 1000.0, "kW"),
        _doc(POWER_L3_W, 3058, "float32", 1000.0, "kW"),
        _doc(POWER_W, 3060, "float32", 1000.0, "kW"),
        _doc(FREQUENCY_HZ, 3110, "float32", 1.0, "Hz"),
        _doc(ENERGY_IMPORT_WH, 3204, "int64", 1.0, "Wh"),
        _doc(
            ENERGY_EXPORT_WH,
            3208,
            "int64",
            1.0,
            "Wh",
            note="export counter exists on bidirectional models (iEM3155/3255/3355); "
            "verify against DOCA0005EN for other variants",
        ),
    ),
)

PM5300: Final = RegisterMap(
    key="pm5300",
    label="Schneider PowerLogic PM5100 / PM5300 family",
    source="PM5100/PM5300 Modbus register list (EAV15107)",
    registers=(
        _doc(CURRENT_L1_A, 3000, "float32", 1.0, "A"),
        _doc(CURRENT_L2_A, 3002, "float32", 1.0, "A"),
        _doc(CURRENT_L3_A, 3004, "float32", 1.0, "A"),
        _doc(VOLTAGE_L1_V, 3028, "float32", 1.0, "V"),
        _doc(VOLTAGE_L2_V, 3030, "float32", 1.0, "V"),
        _doc(VOLTAGE_L3_V, 3032, "float32", 1.0, "V"),
        _doc(POWER_L1_W, 3054, "float32", 1000.0, "kW"),
        _doc(POWER_L2_W, 3056, "float32", 1000.0, "kW"),
        _doc(POWER_L3_W, 3058, "float32", 1000.0, "kW"),
        _doc(POWER_W, 3060, "float32", 1000.0, "kW"),
        _doc(FREQUENCY_HZ, 3110, "float32", 1.0, "Hz"),
        _doc(
            ENERGY_IMPORT_WH,
            3204,
            "int64",
            1.0,
            "Wh",
            note="'active energy delivered (into load)'; verify against EAV15107",
        ),
        _doc(
            ENERGY_EXPORT_WH,
            3208,
            "int64",
            1.0,
            "Wh",
            note="'active energy received (out of load)'; verify against EAV15107",
        ),
    ),
)

POWERTAG: Final = RegisterMap(
    key="powertag",
    label="Schneider PowerTag Energy behind a PowerTag Link / SmartLink gateway (one unit id per tag)",
    source="PowerTag Link gateway user guide DOCA0157EN, Modbus register tables",
    registers=(
        _doc(CURRENT_L1_A, 3000, "float32", 1.0, "A"),
        _doc(CURRENT_L2_A, 3002, "float32", 1.0, "A"),
        _doc(CURRENT_L3_A, 3004, "float32", 1.0, "A"),
        _doc(VOLTAGE_L1_V, 3028, "float32", 1.0, "V"),
        _doc(VOLTAGE_L2_V, 3030, "float32", 1.0, "V"),
        _doc(VOLTAGE_L3_V, 3032, "float32", 1.0, "V"),
        _doc(POWER_L1_W, 3054, "float32", 1.0, "W"),
        _doc(POWER_L2_W, 3056, "float32", 1.0, "W"),
        _doc(POWER_L3_W, 3058, "float32", 1.0, "W"),
        _doc(POWER_W, 3060, "float32", 1.0, "W"),
        _doc(
            FREQUENCY_HZ,
            3110,
            "float32",
            1.0,
            "Hz",
            note="not measured by every PowerTag model (gateway then answers NaN); verify in DOCA0157EN",
        ),
        _doc(
            ENERGY_IMPORT_WH,
            3204,
            "int64",
            1.0,
            "Wh",
            note="legacy zone 'total active energy delivered + received' (not resettable): equals import "
            "only on a load-only circuit; newer gateway firmware also has delivered-only counters in "
            "the 5000 range - verify against DOCA0157EN before using this on a PV/export feeder",
        ),
    ),
)

COMPACT_NSX: Final = RegisterMap(
    key="compact_nsx",
    label="Schneider ComPact NSX with MicroLogic 5/6/7 E trip unit (real-time measurement table)",
    source="ComPact NSX Modbus communication guide DOCA0091EN, real-time and energy measurement registers",
    registers=(
        _doc(
            CURRENT_L1_A,
            1016,
            "uint16",
            1.0,
            "A",
            note="INT16U A; register 1016..1018 inferred from the MicroLogic min/max table "
            "(min of I1 = 1316 = 1016 + 300) - verify against DOCA0091EN 'Current'",
        ),
        _doc(CURRENT_L2_A, 1017, "uint16", 1.0, "A", note="verify against DOCA0091EN 'Current'"),
        _doc(CURRENT_L3_A, 1018, "uint16", 1.0, "A", note="verify against DOCA0091EN 'Current'"),
        _doc(VOLTAGE_L1_V, 1003, "uint16", 1.0, "V", note="V1N INT16U (0x03EA); 0 below 25 V, absent on 3-wire"),
        _doc(VOLTAGE_L2_V, 1004, "uint16", 1.0, "V", note="V2N INT16U (0x03EB)"),
        _doc(VOLTAGE_L3_V, 1005, "uint16", 1.0, "V", note="V3N INT16U (0x03EC)"),
        _doc(
            POWER_L1_W,
            1034,
            "int16",
            100.0,
            "kW x10",
            note="UNVERIFIED: INT16 in 0.1 kW assumed - verify address and scale against DOCA0091EN 'Power'",
        ),
        _doc(POWER_L2_W, 1035, "int16", 100.0, "kW x10", note="UNVERIFIED, see power_l1_w"),
        _doc(POWER_L3_W, 1036, "int16", 100.0, "kW x10", note="UNVERIFIED, see power_l1_w"),
        _doc(POWER_W, 1037, "int16", 100.0, "kW x10", note="UNVERIFIED, see power_l1_w"),
        _doc(
            FREQUENCY_HZ,
            1054,
            "uint16",
            0.1,
            "Hz x10",
            note="scale 10 as in the MicroLogic family example 'register 1054 = 503 -> 50.3 Hz'",
        ),
        _doc(ENERGY_IMPORT_WH, 2008, "int32", 1000.0, "kWh", note="EpIn, INT32 kWh, most significant word first"),
        _doc(ENERGY_EXPORT_WH, 2012, "int32", 1000.0, "kWh", note="EpOut, INT32 kWh"),
    ),
)

MASTERPACT_MTZ: Final = RegisterMap(
    key="masterpact_mtz",
    label="Schneider MasterPact MTZ with MicroLogic X control unit",
    source="MasterPact MTZ Modbus communication guide DOCA0105EN, MicroLogic X real-time measurements",
    registers=(
        _doc(CURRENT_L1_A, 32028, "float32", 1.0, "A", note="UNVERIFIED address - verify against DOCA0105EN 'Current'"),
        _doc(CURRENT_L2_A, 32030, "float32", 1.0, "A", note="UNVERIFIED address, see current_l1_a"),
        _doc(CURRENT_L3_A, 32032, "float32", 1.0, "A", note="UNVERIFIED address, see current_l1_a"),
        _doc(VOLTAGE_L1_V, 32062, "float32", 1.0, "V", note="V1N, DOCA0105EN 'Voltage' table (0x7D3D)"),
        _doc(VOLTAGE_L2_V, 32064, "float32", 1.0, "V", note="V2N (0x7D3F)"),
        _doc(VOLTAGE_L3_V, 32066, "float32", 1.0, "V", note="V3N (0x7D41)"),
        _doc(
            POWER_L1_W,
            32068,
            "float32",
            1.0,
            "W",
            note="UNVERIFIED: assumed to follow the voltage block, in W - verify address and unit "
            "against DOCA0105EN 'Power' (another reading puts power at 32042)",
        ),
        _doc(POWER_L2_W, 32070, "float32", 1.0, "W", note="UNVERIFIED, see power_l1_w"),
        _doc(POWER_L3_W, 32072, "float32", 1.0, "W", note="UNVERIFIED, see power_l1_w"),
        _doc(POWER_W, 32074, "float32", 1.0, "W", note="UNVERIFIED, see power_l1_w"),
        _doc(
            ENERGY_IMPORT_WH,
            32096,
            "int64",
            1.0,
            "Wh",
            note="UNVERIFIED: active energy delivered - verify against DOCA0105EN 'Energy'",
        ),
        _doc(ENERGY_EXPORT_WH, 32100, "int64", 1.0, "Wh", note="UNVERIFIED: active energy received"),
    ),
)

#: Built-in meter types by key.
METER_TYPES: Final[Mapping[str, RegisterMap]] = {
    table.key: table for table in (IEM3X5X, PM5300, POWERTAG, COMPACT_NSX, MASTERPACT_MTZ)
}


def get_register_map(key: str) -> RegisterMap:
    """Built-in map by key, with an error that lists the valid keys."""
    try:
        return METER_TYPES[key]
    except KeyError:
        raise KeyError(f"unknown meter type {key!r} (known: {_choices(tuple(METER_TYPES))})") from None


# --------------------------------------------------------------------------- #
# Generic map: for meters we do not ship a table for.                          #
# --------------------------------------------------------------------------- #
_GENERIC_FIELDS: Final = ("address", "register", "data_type", "scale", "word_order", "function_code", "unit")


def build_generic_map(
    spec: Mapping[str, Mapping[str, Any]],
    *,
    key: str = "generic",
    label: str = "Generic Modbus meter",
    source: str = "user-supplied register list",
    word_order: str = "big",
) -> RegisterMap:
    """Build a map from ``{quantity: {address|register, data_type, scale, ...}}``.

    Installers type these from a datasheet, so every entry is validated with a
    message naming the quantity and the field. ``address`` is the wire address
    (0-based); ``register`` is the documented 1-based number (wire = register - 1).
    Optional fields: ``scale`` (default 1), ``word_order`` (default: the map's),
    ``function_code`` (3 or 4, default 3), ``unit`` (free text).
    Raises ValueError for bad content, TypeError when the shape is not
    ``{quantity: {...}}``.
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"generic meter: expected a mapping quantity -> register, got {type(spec).__name__}")
    if not spec:
        raise ValueError("generic meter: give at least one quantity")
    if word_order not in WORD_ORDERS:
        raise ValueError(f"generic meter: unknown word order {word_order!r} (expected one of: {_choices(WORD_ORDERS)})")
    registers = tuple(_generic_register(quantity, entry) for quantity, entry in spec.items())
    return RegisterMap(key=key, label=label, source=source, registers=registers, word_order=word_order)  # type: ignore[arg-type]


def generic_map_from_json(text: str, **kwargs: Any) -> RegisterMap:
    """Same as :func:`build_generic_map`, from JSON text (e.g. an admin form field).

    Any problem with the text is a ValueError here: it is all user input.
    """
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"generic meter: invalid JSON ({exc})") from None
    try:
        return build_generic_map(spec, **kwargs)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _generic_register(quantity: str, entry: Mapping[str, Any]) -> Register:
    """Validate one user entry and turn it into a Register."""
    if quantity not in QUANTITY_UNITS:
        raise ValueError(f"unknown quantity {quantity!r} (expected one of: {_choices(QUANTITIES)})")
    if not isinstance(entry, Mapping):
        raise TypeError(f"{quantity}: expected an object with address and data_type, got {entry!r}")
    unknown = sorted(set(entry) - set(_GENERIC_FIELDS))
    if unknown:
        raise ValueError(f"{quantity}: unknown field(s) {', '.join(unknown)} (allowed: {_choices(_GENERIC_FIELDS)})")
    if "data_type" not in entry:
        raise ValueError(f"{quantity}: data_type is required (one of: {_choices(DATA_TYPES)})")
    return Register(
        quantity=quantity,
        address=_generic_address(quantity, entry),
        data_type=entry["data_type"],
        scale=entry.get("scale", 1.0),
        unit=str(entry.get("unit", "")),
        function_code=entry.get("function_code", 3),
        word_order=entry.get("word_order"),
    )


def _generic_address(quantity: str, entry: Mapping[str, Any]) -> int:
    """Wire address from either ``address`` (0-based) or ``register`` (1-based)."""
    has_address, has_register = "address" in entry, "register" in entry
    if has_address == has_register:
        raise ValueError(
            f"{quantity}: give exactly one of 'address' (wire, 0-based) or 'register' (documented, 1-based)"
        )
    if has_address:
        return entry["address"]
    register = entry["register"]
    if not _is_int(register) or register < 1:
        raise ValueError(f"{quantity}: register must be an integer >= 1 (documented number), got {register!r}")
    return register - 1
