"""Pure decoding, request planning and configuration checks (no network)."""

from __future__ import annotations

import dataclasses

import pytest

from meters.modbus import (
    MAX_REGISTERS_PER_READ,
    MeterConfig,
    ValueRejected,
    decode_raw,
    decode_register,
    plan_reads,
)
from meters.registers import IEM3X5X, Register, get_register_map

# Hand-computed wire images (not produced by the fakes' encoder, to keep tests independent).
FLOAT_230_5 = [0x4366, 0x8000]  # 230.5 as IEEE-754 big-endian
FLOAT_MINUS_1_5 = [0xBFC0, 0x0000]


@pytest.mark.parametrize(
    ("words", "data_type", "word_order", "expected"),
    [
        (FLOAT_230_5, "float32", "big", 230.5),
        (FLOAT_230_5[::-1], "float32", "little", 230.5),
        (FLOAT_MINUS_1_5, "float32", "big", -1.5),
        ([0x0000, 0x0000], "float32", "big", 0.0),
        ([0xFFFF], "int16", "big", -1),
        ([0x7FFF], "int16", "big", 32767),
        ([0x8001], "uint16", "big", 0x8001),
        ([0x0001, 0x0002], "int32", "big", 0x0001_0002),
        ([0x0002, 0x0001], "int32", "little", 0x0001_0002),
        ([0xFFFF, 0xFFFE], "int32", "big", -2),
        ([0x1234, 0x5678], "uint32", "big", 0x1234_5678),
        ([0x0000, 0x0000, 0x075B, 0xCD15], "int64", "big", 123_456_789),
        ([0xCD15, 0x075B, 0x0000, 0x0000], "int64", "little", 123_456_789),
        ([0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], "int64", "big", -1),
        ([0x0001, 0x0000, 0x0000, 0x0000], "uint64", "big", 1 << 48),
    ],
)
def test_decode_raw(words: list[int], data_type: str, word_order: str, expected: float) -> None:
    assert decode_raw(words, data_type, word_order) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("words", "data_type", "reason"),
    [
        ([0xFFC0, 0x0000], "float32", "NaN"),  # Schneider "not available"
        ([0x7FC0, 0x0000], "float32", "NaN"),
        ([0x7F80, 0x0000], "float32", "infinity"),
        ([0xFF80, 0x0000], "float32", "infinity"),
        ([0x8000], "int16", "not available"),
        ([0xFFFF], "uint16", "not available"),
        ([0x8000, 0x0000], "int32", "not available"),
        ([0xFFFF, 0xFFFF], "uint32", "not available"),
        ([0x8000, 0, 0, 0], "int64", "not available"),
        ([0xFFFF] * 4, "uint64", "not available"),
        ([0x0001], "float32", "needs 2 registers, got 1"),
        ([0x1_0000, 0], "float32", "not a 16-bit word"),
        ([0, 0], "float64", "unknown data type"),
    ],
)
def test_decode_raw_rejects_with_reason(words: list[int], data_type: str, reason: str) -> None:
    with pytest.raises(ValueRejected, match=reason):
        decode_raw(words, data_type)  # type: ignore[arg-type]


def test_decode_register_scales_to_si() -> None:
    power_kw = Register("power_w", 3059, "float32", scale=1000.0)
    assert decode_register([0x41A8, 0x8000], power_kw) == pytest.approx(21_062.5)  # 21.0625 kW
    tenths = Register("frequency_hz", 1053, "uint16", scale=0.1)
    assert decode_register([503], tenths) == pytest.approx(50.3)


def test_decode_register_rejects_absurd_values() -> None:
    power_kw = Register("power_w", 3059, "float32", scale=1000.0)
    with pytest.raises(ValueRejected, match="plausibility"):
        decode_register([0x6E6B, 0x2800], power_kw)  # ~1.8e28 kW: garbage, not a reading
    energy = Register("energy_import_wh", 3203, "int64")
    with pytest.raises(ValueRejected, match="plausibility"):
        decode_register([0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF], energy)


def test_plan_iem3x5x_groups_contiguous_registers() -> None:
    blocks = plan_reads(IEM3X5X.registers)
    assert [(b.function_code, b.address, b.count) for b in blocks] == [
        (3, 2999, 6),  # I1..I3
        (3, 3027, 6),  # V1N..V3N
        (3, 3053, 8),  # P1..P3, Ptot
        (3, 3109, 2),  # frequency
        (3, 3203, 8),  # energy import + export
    ]
    assert sum(len(b.registers) for b in blocks) == len(IEM3X5X.registers)


def test_plan_with_gap_bridges_small_holes_only() -> None:
    blocks = plan_reads(IEM3X5X.registers, max_gap=30)
    assert [(b.address, b.count) for b in blocks] == [(2999, 62), (3109, 2), (3203, 8)]


def test_plan_respects_max_count_and_function_codes() -> None:
    regs = [Register("current_l1_a", 0, "float32"), Register("current_l2_a", 124, "float32")]
    regs.append(Register("power_w", 0, "float32", function_code=4))
    blocks = plan_reads(regs, max_gap=200)
    assert [(b.function_code, b.address, b.count) for b in blocks] == [(3, 0, 2), (3, 124, 2), (4, 0, 2)]
    assert all(b.count <= MAX_REGISTERS_PER_READ for b in blocks)
    contiguous = [Register("current_l1_a", 0, "float32"), Register("current_l2_a", 2, "float32")]
    assert len(plan_reads(contiguous, max_count=3)) == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"host": ""}, "host is required"),
        ({"port": 0}, "port must be 1..65535"),
        ({"unit_id": 256}, "unit_id must be 0..255"),
        ({"timeout_s": 0}, "timeout_s must be a positive"),
        ({"transport": "udp"}, "unknown transport 'udp'"),
        ({"word_order": "mixed"}, "unknown word order"),
        ({"transport": "rtu_serial"}, "serial_device is required"),
        ({"transport": "rtu_serial", "serial_device": "/dev/ttyUSB0", "unit_id": 0}, "unit_id must be 1..247"),
        ({"transport": "rtu_serial", "serial_device": "/dev/ttyUSB0", "parity": "X"}, "parity must be N, E or O"),
    ],
)
def test_config_validation(changes: dict[str, object], message: str) -> None:
    base = MeterConfig(get_register_map("iem3x5x"), host="10.0.0.5")
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(base, **changes)
