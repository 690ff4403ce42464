"""Register maps: built-in tables are consistent, the generic builder explains mistakes."""

from __future__ import annotations

import pytest

from meters import registers as r
from meters.registers import (
    METER_TYPES,
    QUANTITIES,
    Register,
    RegisterMap,
    build_generic_map,
    generic_map_from_json,
    get_register_map,
)


def test_all_brief_meter_types_are_provided() -> None:
    assert set(METER_TYPES) == {"iem3x5x", "pm5300", "powertag", "compact_nsx", "masterpact_mtz"}


@pytest.mark.parametrize("register_map", METER_TYPES.values(), ids=lambda m: m.key)
def test_every_table_cites_a_schneider_document(register_map: RegisterMap) -> None:
    documents = ("DOCA0005EN", "EAV15107", "DOCA0157EN", "DOCA0091EN", "DOCA0105EN")
    assert any(doc in register_map.source for doc in documents)
    assert register_map.label
    assert set(register_map.quantities) <= set(QUANTITIES)


@pytest.mark.parametrize("register_map", METER_TYPES.values(), ids=lambda m: m.key)
def test_every_table_provides_what_load_management_needs(register_map: RegisterMap) -> None:
    needed = {r.POWER_W, r.CURRENT_L1_A, r.CURRENT_L2_A, r.CURRENT_L3_A, r.ENERGY_IMPORT_WH}
    assert needed <= set(register_map.quantities)


def test_iem3x5x_addresses_are_documented_register_minus_one() -> None:
    iem = get_register_map("iem3x5x")
    expected = {
        r.CURRENT_L1_A: (2999, "float32", 1.0),
        r.CURRENT_L3_A: (3003, "float32", 1.0),
        r.VOLTAGE_L1_V: (3027, "float32", 1.0),
        r.POWER_L1_W: (3053, "float32", 1000.0),
        r.POWER_W: (3059, "float32", 1000.0),
        r.FREQUENCY_HZ: (3109, "float32", 1.0),
        r.ENERGY_IMPORT_WH: (3203, "int64", 1.0),
        r.ENERGY_EXPORT_WH: (3207, "int64", 1.0),
    }
    for quantity, (address, data_type, scale) in expected.items():
        reg = iem.register_for(quantity)
        assert (reg.address, reg.data_type, reg.scale, reg.function_code) == (address, data_type, scale, 3)
    assert iem.word_order == "big"


def test_powertag_power_is_in_watts_and_iem_in_kilowatts() -> None:
    assert get_register_map("powertag").register_for(r.POWER_W).scale == 1.0
    assert get_register_map("iem3x5x").register_for(r.POWER_W).scale == 1000.0
    assert get_register_map("pm5300").register_for(r.POWER_W).scale == 1000.0


def test_unverified_addresses_say_so() -> None:
    mtz = get_register_map("masterpact_mtz")
    assert "UNVERIFIED" in mtz.register_for(r.POWER_W).note
    assert "UNVERIFIED" in get_register_map("compact_nsx").register_for(r.POWER_W).note


def test_unknown_meter_type_lists_known_ones() -> None:
    with pytest.raises(KeyError, match="iem3x5x"):
        get_register_map("iem9999")


def test_register_for_missing_quantity_names_available_ones() -> None:
    with pytest.raises(KeyError, match="power_w"):
        get_register_map("powertag").register_for(r.ENERGY_EXPORT_WH)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantity": "power_kw"}, "unknown quantity 'power_kw'"),
        ({"data_type": "float64"}, "unknown data type 'float64'"),
        ({"address": -1}, "address must be an integer >= 0"),
        ({"address": True}, "address must be an integer >= 0"),
        ({"address": 65535}, "exceed the 16-bit address space"),
        ({"scale": 0}, "scale must be finite and non-zero"),
        ({"scale": float("nan")}, "scale must be finite and non-zero"),
        ({"function_code": 6}, "function code must be 3 (holding) or 4 (input)"),
        ({"word_order": "middle"}, "unknown word order 'middle'"),
    ],
)
def test_register_validation_messages(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"quantity": "power_w", "address": 100, "data_type": "float32"}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Register(**fields)  # type: ignore[arg-type]


def test_documented_register_rejects_zero() -> None:
    with pytest.raises(ValueError, match="documented register must be an integer >= 1"):
        Register.documented(r.POWER_W, 0, "float32")


def test_map_rejects_overlap_and_duplicates() -> None:
    power = Register(r.POWER_W, 100, "float32")
    with pytest.raises(ValueError, match="overlap"):
        RegisterMap("x", "x", "x", (power, Register(r.CURRENT_L1_A, 101, "float32")))
    with pytest.raises(ValueError, match="listed twice"):
        RegisterMap("x", "x", "x", (power, Register(r.POWER_W, 200, "float32")))
    with pytest.raises(ValueError, match="at least one register"):
        RegisterMap("x", "x", "x", ())
    # Same address under another function code is a different register: allowed.
    RegisterMap("x", "x", "x", (power, Register(r.CURRENT_L1_A, 100, "float32", function_code=4)))


def test_generic_map_from_documented_and_wire_addresses() -> None:
    generic = build_generic_map(
        {
            "power_w": {"register": 41, "data_type": "int32", "scale": 0.1, "word_order": "little"},
            "current_l1_a": {"address": 10, "data_type": "uint16", "scale": 0.01, "function_code": 4},
            "energy_import_wh": {"address": 50, "data_type": "uint32", "scale": 1000, "unit": "kWh"},
        },
        key="acme",
        word_order="big",
    )
    power = generic.register_for("power_w")
    assert (power.address, power.data_type, power.scale, power.word_order) == (40, "int32", 0.1, "little")
    assert generic.register_for("current_l1_a").function_code == 4
    assert generic.register_for("energy_import_wh").word_order is None
    assert generic.key == "acme"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"power_kw": {"address": 1, "data_type": "int16"}}, "unknown quantity 'power_kw'"),
        ({"power_w": {"address": 1, "data_type": "int128"}}, "power_w: unknown data type 'int128'"),
        ({"power_w": {"address": -5, "data_type": "int16"}}, "power_w: address must be an integer >= 0"),
        ({"power_w": {"address": "12", "data_type": "int16"}}, "power_w: address must be an integer >= 0"),
        ({"power_w": {"register": 0, "data_type": "int16"}}, "power_w: register must be an integer >= 1"),
        ({"power_w": {"address": 1, "register": 2, "data_type": "int16"}}, "give exactly one of 'address'"),
        ({"power_w": {"data_type": "int16"}}, "give exactly one of 'address'"),
        ({"power_w": {"address": 1}}, "power_w: data_type is required"),
        ({"power_w": {"adress": 1, "data_type": "int16"}}, "power_w: unknown field\\(s\\) adress"),
        ({"power_w": {"address": 1, "data_type": "int16", "scale": 0}}, "scale must be finite and non-zero"),
        ({"power_w": {"address": 1, "data_type": "int16", "word_order": "mixed"}}, "unknown word order 'mixed'"),
        ({"power_w": {"address": 1, "data_type": "int16", "function_code": 1}}, "function code must be 3"),
        (
            {"power_w": {"address": 1, "data_type": "float32"}, "current_l1_a": {"address": 2, "data_type": "int16"}},
            "overlap",
        ),
        ({}, "at least one quantity"),
    ],
)
def test_generic_map_validation_messages(spec: dict[str, dict[str, object]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_generic_map(spec)


def test_generic_map_bad_word_order_default() -> None:
    with pytest.raises(ValueError, match="unknown word order 'middle'"):
        build_generic_map({"power_w": {"address": 1, "data_type": "int16"}}, word_order="middle")


def test_generic_map_wrong_shape_is_type_error() -> None:
    with pytest.raises(TypeError, match="power_w: expected an object"):
        build_generic_map({"power_w": 12})  # type: ignore[dict-item]


def test_generic_map_from_json() -> None:
    generic = generic_map_from_json('{"power_w": {"register": 3060, "data_type": "float32", "scale": 1000}}')
    assert generic.register_for("power_w").address == 3059
    with pytest.raises(ValueError, match="invalid JSON"):
        generic_map_from_json("{power_w:")
    with pytest.raises(ValueError, match="expected a mapping"):
        generic_map_from_json("[1, 2]")
