"""Compiled OCPP 1.6 schemas: the checks the library's jsonschema pass made, without it."""

from __future__ import annotations

import asyncio
import json

import pytest
from ocpp.exceptions import PropertyConstraintViolationError, TypeConstraintViolationError
from ocpp.v16 import call as v16_call

from chargers.protocol import CentralSystemChargePoint
from chargers.schemas import CALL, CALLRESULT, schema_problem
from tests.central_wire import RecordingWire, central_point

PROFILE = {
    "connectorId": 1,
    "csChargingProfiles": {
        "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 21.4}]},
    },
}


def test_it_accepts_what_the_official_schema_accepts():
    assert schema_problem(CALL, "Heartbeat", {}) is None
    assert schema_problem(CALL, "SetChargingProfile", PROFILE) is None  # 21.4 is a multiple of 0.1
    assert schema_problem(CALLRESULT, "GetLocalListVersion", {"listVersion": 3}) is None


@pytest.mark.parametrize(
    ("message_type", "action", "payload", "code"),
    [
        (CALL, "Heartbeat", {"x": 1}, "FormationViolation"),
        (CALL, "Authorize", {}, "ProtocolError"),
        (CALL, "Authorize", {"idTag": 5}, "TypeConstraintViolation"),
        (CALL, "Authorize", {"idTag": "X" * 21}, "TypeConstraintViolation"),
        (CALL, "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Bogus"},
         "PropertyConstraintViolation"),
        (CALL, "MeterValues", {"connectorId": 1, "meterValue": []}, "OccurenceConstraintViolation"),
        (CALLRESULT, "Reset", {"status": "Maybe"}, "PropertyConstraintViolation"),
        (CALLRESULT, "GetLocalListVersion", {}, "ProtocolError"),
    ],
)
def test_it_names_the_ocpp_error_of_each_broken_rule(message_type, action, payload, code):
    problem = schema_problem(message_type, action, payload)
    assert problem is not None and problem.code == code


def test_a_limit_off_the_tenth_breaks_the_profile_schema():
    profile = json.loads(json.dumps(PROFILE))
    profile["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] = 21.45
    problem = schema_problem(CALL, "SetChargingProfile", profile)
    assert problem is not None and problem.code == "PropertyConstraintViolation"


def _point(wire: RecordingWire) -> CentralSystemChargePoint:
    return central_point("CP-S", wire)


@pytest.mark.asyncio
async def test_an_answer_breaking_its_schema_fails_the_call_with_its_code():
    wire = RecordingWire()
    point = _point(wire)
    pending = asyncio.ensure_future(point.call(v16_call.Reset(type="Soft"), suppress=False))
    while not wire.sent:
        await asyncio.sleep(0.01)
    await point.route(3, wire.sent[0][1], "", [3, wire.sent[0][1], {"status": 7}])
    with pytest.raises(TypeConstraintViolationError):
        await pending
    assert not point.awaits(wire.sent[0][1])


@pytest.mark.asyncio
async def test_a_request_breaking_its_schema_is_never_sent():
    wire = RecordingWire()
    with pytest.raises(PropertyConstraintViolationError):
        await _point(wire).call(v16_call.Reset(type="Gentle"), suppress=False)
    assert wire.sent == []


@pytest.mark.asyncio
async def test_a_valid_answer_becomes_the_librarys_call_result():
    wire = RecordingWire()
    point = _point(wire)
    pending = asyncio.ensure_future(point.call(v16_call.GetConfiguration(key=["HeartbeatInterval"])))
    while not wire.sent:
        await asyncio.sleep(0.01)
    assert wire.sent[0][2:] == ["GetConfiguration", {"key": ["HeartbeatInterval"]}]
    answer = {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]}
    await point.route(3, wire.sent[0][1], "", [3, wire.sent[0][1], answer])
    result = await pending
    assert result.configuration_key == [{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]


@pytest.fixture
def fresh_schemas(tmp_path, monkeypatch):
    """chargers.schemas with no validator compiled yet and its cache in `tmp_path`."""
    from chargers import schemas

    monkeypatch.setattr(schemas, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(schemas, "_validators", {})
    return schemas


def _generated(schemas, monkeypatch) -> list[str]:
    """The names of the schemas fastjsonschema is asked to generate code for from now on."""
    import fastjsonschema

    generated: list[str] = []
    real = fastjsonschema.compile_to_code

    def counting(definition, **options):
        generated.append(definition.get("title", "?"))
        return real(definition, **options)

    monkeypatch.setattr(schemas.fastjsonschema, "compile_to_code", counting)
    return generated


def test_a_process_start_loads_the_validators_compiled_by_an_earlier_one(fresh_schemas, monkeypatch):
    generated = _generated(fresh_schemas, monkeypatch)
    fresh_schemas.compile_all(["MeterValues", "Reset"], keep=True)
    assert len(generated) == 4
    assert len(list(fresh_schemas.CACHE_DIR.glob("ocpp16-validators.*.marshal"))) == 1

    monkeypatch.setattr(fresh_schemas, "_validators", {})  # the next process
    fresh_schemas.compile_all(["MeterValues", "Reset"])
    assert len(generated) == 4  # nothing generated again
    problem = fresh_schemas.schema_problem(CALL, "MeterValues", {"connectorId": "1", "meterValue": []})
    assert problem is not None and problem.code == "TypeConstraintViolation"
    assert fresh_schemas.schema_problem(CALLRESULT, "Reset", {"status": "Accepted"}) is None
    assert fresh_schemas.schema_problem(CALLRESULT, "Reset", {"status": "Maybe"}).code == (
        "PropertyConstraintViolation")

    # Other schemas (another ocpp release) are another key: compiled, and the stale cache replaced.
    fresh_schemas.compile_all(["Heartbeat"], keep=True)
    assert len(generated) == 6
    assert len(list(fresh_schemas.CACHE_DIR.glob("ocpp16-validators.*.marshal"))) == 1


def test_a_corrupt_or_unwritable_cache_only_costs_a_compile(fresh_schemas, monkeypatch, caplog):
    generated = _generated(fresh_schemas, monkeypatch)
    fresh_schemas.compile_all(["Heartbeat"], keep=True)
    [cache] = fresh_schemas.CACHE_DIR.glob("ocpp16-validators.*.marshal")
    cache.write_bytes(b"\x00garbage")
    monkeypatch.setattr(fresh_schemas, "_validators", {})

    fresh_schemas.compile_all(["Heartbeat"], keep=True)

    assert len(generated) == 4
    assert "unreadable" in caplog.text
    assert fresh_schemas.schema_problem(CALL, "Heartbeat", {}) is None
    assert fresh_schemas.schema_problem(CALL, "Heartbeat", {"x": 1}).code == "FormationViolation"

    monkeypatch.setattr(fresh_schemas, "CACHE_DIR", cache / "not-a-directory")  # cannot be created
    monkeypatch.setattr(fresh_schemas, "_validators", {})
    fresh_schemas.compile_all(["Heartbeat"], keep=True)
    assert fresh_schemas.schema_problem(CALL, "Heartbeat", {}) is None


@pytest.mark.parametrize("dont_write_bytecode", [True, False])
def test_a_start_keeps_the_validators_as_python_keeps_bytecode(fresh_schemas, monkeypatch, dont_write_bytecode):
    """PYTHONDONTWRITEBYTECODE: nothing written into the installation at run time (the install
    step, evce/precompile.py, keeps them with keep=True)."""
    monkeypatch.setattr(fresh_schemas.sys, "dont_write_bytecode", dont_write_bytecode)
    fresh_schemas.compile_all(["Heartbeat"])
    kept = list(fresh_schemas.CACHE_DIR.glob("ocpp16-validators.*.marshal"))
    assert len(kept) == (0 if dont_write_bytecode else 1)
