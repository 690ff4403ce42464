"""Compiled validators of the official OCPP 1.6 JSON schemas (those the `ocpp` package ships).

The `ocpp` library validates each payload with `jsonschema` in a thread-pool hop, twice per
frame (the request and our answer): the hot path's largest cost after the database. Here
each schema is compiled once per process by `fastjsonschema` into a plain Python function
(~10 µs for a MeterValues of 5 samples) that runs on the event loop, never on the database
thread. Compiled as the library reads them: Draft 4, `format` not checked (the library
passes no format checker; timestamps are parsed by the handlers), no defaults filled in,
`multipleOf` checked in decimal (fastjsonschema divides `Decimal(repr(x))`, so 21.4 is a
multiple of 0.1, as the library's Decimal re-parse makes it).

`compile_all()` builds every validator the central system uses (the consumer calls it at
import, so a Daphne process never compiles on a charger's frame); a validator asked for
before that is compiled on first use and kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import fastjsonschema
import ocpp

SCHEMA_DIR = Path(ocpp.__file__).resolve().parent / "v16" / "schemas"

CALL, CALLRESULT = 2, 3

# The schema keyword that failed → OCPP-J 1.6 error code (§4.2.3 table 7): a value of the
# wrong type (or too long for its CiString type) → TypeConstraintViolation, a missing field
# → ProtocolError ("incomplete"), an unknown field → FormationViolation ("syntactically
# incorrect"), too few/many items → OccurenceConstraintViolation, a value outside what its
# field allows → PropertyConstraintViolation.
ERROR_CODES = {
    "type": "TypeConstraintViolation",
    "maxLength": "TypeConstraintViolation",
    "required": "ProtocolError",
    "additionalProperties": "FormationViolation",
    "minItems": "OccurenceConstraintViolation",
    "maxItems": "OccurenceConstraintViolation",
    "enum": "PropertyConstraintViolation",
    "minimum": "PropertyConstraintViolation",
    "maximum": "PropertyConstraintViolation",
    "pattern": "PropertyConstraintViolation",
    "minLength": "PropertyConstraintViolation",
    "multipleOf": "PropertyConstraintViolation",
}
_DESCRIPTION_MAX = 200

Validator = Callable[[object], object]
_validators: dict[str, Validator] = {}


@dataclass(frozen=True)
class SchemaProblem:
    """The first schema rule a payload breaks, as an OCPP-J error code and a short text."""

    code: str
    description: str


def schema_name(message_type: int, action: str) -> str:
    """The file name (without .json) of `action`'s request (CALL) or answer (CALLRESULT) schema."""
    return action + "Response" if message_type == CALLRESULT else action


def validator(name: str) -> Validator:
    """The compiled validator of schema `name` (e.g. "MeterValues", "ResetResponse")."""
    compiled = _validators.get(name)
    if compiled is None:
        schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8-sig"))
        compiled = _validators[name] = fastjsonschema.compile(schema, use_default=False, use_formats=False)
    return compiled


def compile_all(actions: Iterable[str]) -> None:
    """Compile the request and answer schemas of `actions` now."""
    for action in actions:
        validator(schema_name(CALL, action))
        validator(schema_name(CALLRESULT, action))


def schema_problem(message_type: int, action: str, payload: object) -> SchemaProblem | None:
    """None when `payload` is valid for `action`'s CALL or CALLRESULT schema; else what is wrong.

    Raises FileNotFoundError for an action OCPP 1.6 does not define.
    """
    try:
        validator(schema_name(message_type, action))(payload)
    except fastjsonschema.JsonSchemaValueException as error:
        code = ERROR_CODES.get(str(error.rule), "FormationViolation")
        return SchemaProblem(code, _describe(error)[:_DESCRIPTION_MAX])
    return None


def _describe(error: fastjsonschema.JsonSchemaValueException) -> str:
    """"meterValue[0].sampledValue must contain at least 1 items": the message without its
    "data." root and without the offending value (which may be a huge string)."""
    message = str(error.message)
    if message.startswith("data."):
        return message[len("data."):]
    if message.startswith("data "):
        return "payload " + message[len("data "):]
    return message
