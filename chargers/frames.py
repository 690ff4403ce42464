"""OCPP-J 1.6 frame checks done before the `ocpp` library routes a message.

The library answers an unknown action with NotSupported and a known-but-unhandled one
with NotImplemented; OCPP-J 1.6 §4.2.3 defines them the other way round. It also drops
unparsable frames without an answer, parses `NaN` and `1e309`, recurses on deep nesting
and maps schema errors to codes the spec does not use. This module decides all of that
per the spec, before anything reaches a handler or the database. Pure functions, no I/O.

Decisions (OCPP-J 1.6 §4.1.2, §4.2.3 table 7), in the order they are checked:

- Not JSON, `NaN`/`±Infinity`, a number that overflows a double (`1e309`), nesting
  deeper than MAX_DEPTH → FormationViolation ("syntactically incorrect"). The spec's
  "valid JSON" is RFC 8259 JSON, which has no NaN/Infinity.
- An integer outside the signed 32-bit range → TypeConstraintViolation. OCPP 1.6 names
  the type `integer` without a width; OCPP 2.0.1 fixes it at 32 bits and 1.6 stacks use
  int32 (EVerest, ChargeLab), as do our PostgreSQL columns, so a larger value is a type
  the receiver does not have, never a database overflow.
- Strings: trailing NUL characters are dropped (firmware padding C strings, "SN12\\u0000";
  the value is what precedes them). A NUL elsewhere, or a lone UTF-16 surrogate (which
  UTF-8 cannot encode, §4.1.2), → PropertyConstraintViolation: the JSON is valid but
  the value is not a string we can store (PostgreSQL refuses both).
- Schema (compiled validators of the official 1.6 schemas, chargers.schemas): type and
  maxLength → TypeConstraintViolation, missing field → ProtocolError ("incomplete"),
  unknown field → FormationViolation, minItems/maxItems → OccurenceConstraintViolation,
  enum/minimum/pattern → PropertyConstraintViolation ("at least one field contains an
  invalid value"). The first rule broken, in schema order, decides.
- Field ranges the 1.6 spec states in its field tables: connectorId > 0 in
  StartTransaction, ≥ 0 in StatusNotification and MeterValues →
  PropertyConstraintViolation.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from ocpp.v16.enums import Action

from chargers.schemas import schema_problem

CALL, CALLRESULT, CALLERROR = 2, 3, 4

# No OCPP 1.6 payload nests deeper than 6 (StopTransaction → transactionData →
# sampledValue); the envelope adds one. Anything far deeper is an attack.
MAX_DEPTH = 16
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
UNIQUE_ID_MAX_LENGTH = 36  # OCPP-J 1.6 §4.1.4
_DESCRIPTION_MAX = 200

# Actions a charge point may send to the central system (OCPP 1.6 edition 2 §4, §6).
CHARGER_INITIATED = frozenset(
    {
        "Authorize",
        "BootNotification",
        "DataTransfer",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StartTransaction",
        "StatusNotification",
        "StopTransaction",
    }
)

# Actions the central system may send to a charge point (OCPP 1.6 edition 2 §5).
SYSTEM_INITIATED = frozenset(
    {
        "CancelReservation",
        "ChangeAvailability",
        "ChangeConfiguration",
        "ClearCache",
        "ClearChargingProfile",
        "DataTransfer",
        "GetCompositeSchedule",
        "GetConfiguration",
        "GetDiagnostics",
        "GetLocalListVersion",
        "RemoteStartTransaction",
        "RemoteStopTransaction",
        "ReserveNow",
        "Reset",
        "SendLocalList",
        "SetChargingProfile",
        "TriggerMessage",
        "UnlockConnector",
        "UpdateFirmware",
    }
)
# Every action whose request and answer schemas the central system validates (their validators
# are compiled at import by chargers.consumers and ahead of it by evce.precompile: one key).
EVERY_ACTION = CHARGER_INITIATED | SYSTEM_INITIATED

# Lowest connectorId per action, from the 1.6 field tables (edition 2 §6.46, §6.33, §6.31).
_MIN_CONNECTOR_ID = {"StartTransaction": 1, "StatusNotification": 0, "MeterValues": 0}

_KNOWN_16_ACTIONS = frozenset(action.value for action in Action)
_UNIQUE_ID_PREFIX = re.compile(r'^\s*\[\s*([234])\s*,\s*"([^"\\]{1,36})"')

# OCPP-J 1.6 spells two error codes differently from later versions; the errata keep
# the 1.6 spelling on the wire (errata §5.1, §5.2).
_CODE_SPELLING_16 = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
}

@dataclass(frozen=True)
class FrameProblem:
    """A frame that must be answered with a CALLERROR, or (no unique id) by closing."""

    unique_id: str | None
    code: str
    description: str
    # 2, 3 or 4 when known. A bad CALLRESULT/CALLERROR is never answered: a CALLERROR
    # only ever answers a CALL (OCPP-J §4.2.3).
    message_type: int | None = None

    @property
    def answerable(self) -> bool:
        return self.unique_id is not None and self.message_type not in (CALLRESULT, CALLERROR)

    def call_error(self) -> str:
        return json.dumps([CALLERROR, self.unique_id, self.code, self.description[:_DESCRIPTION_MAX], {}])


@dataclass(frozen=True)
class Frame:
    """A well-formed frame; `message` is the decoded array with its strings cleaned."""

    message_type: int
    unique_id: str
    action: str  # empty for CALLRESULT / CALLERROR
    payload: object
    message: list[object]
    # What the `ocpp` library must parse: the original text, or the cleaned array
    # re-encoded when cleaning changed a string.
    text: str


class _Refused(Exception):
    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def _refuse_constant(name: str) -> float:
    raise _Refused("FormationViolation", f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("FormationViolation", "Number out of the range of a double")
    return value


def decode_json(text: str) -> object:
    """RFC 8259 JSON only: no NaN/Infinity, no overflowing numbers, bounded nesting.

    Raises _Refused. The depth is checked by `_clean` on the result; a nesting deep
    enough to exhaust the parser's recursion is refused here.
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _Refused:
        raise
    except RecursionError:
        raise _Refused("FormationViolation", f"Nesting deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise _Refused("FormationViolation", "Frame is not valid JSON") from None


def _clean_string(value: str) -> str:
    if value.isascii() and "\x00" not in value:
        return value
    cleaned = value.rstrip("\x00")
    if "\x00" in cleaned:
        raise _Refused("PropertyConstraintViolation", "A string contains a NUL character")
    try:
        cleaned.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refused("PropertyConstraintViolation", "A string contains a lone UTF-16 surrogate") from None
    return cleaned


def _clean(value: object, depth: int = 0) -> object:
    """Check depth, integers and strings; return the value with trailing NULs dropped."""
    if depth > MAX_DEPTH:
        raise _Refused("FormationViolation", f"Nesting deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return _clean_string(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise _Refused("TypeConstraintViolation", "Integer out of the 32-bit range of OCPP integers")
        return value
    if isinstance(value, list):
        return [_clean(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {_clean_string(key): _clean(item, depth + 1) for key, item in value.items()}
    return value  # pragma: no cover - json.loads produces nothing else


_TEN_DIGITS = re.compile(r"\d{10}")


def _plainly_clean(text: str) -> bool:
    """True when the text alone shows that `_must_clean` has nothing to find, from a few
    C-speed scans instead of a walk of the decoded frame: ASCII without any \\u escape (a
    NUL or a surrogate can only come as one), fewer brackets than MAX_DEPTH (so no deeper
    nesting), no run of ten digits (so every integer is within ±999,999,999). A typical
    MeterValues frame passes; anything else is walked."""
    return (text.isascii() and "\\u" not in text and text.count("[") + text.count("{") <= MAX_DEPTH
            and _TEN_DIGITS.search(text) is None)


def _must_clean(value: object, depth: int = 0) -> bool:
    """What `_clean` refuses, refused (raises _Refused) without copying anything; True when
    some string must lose trailing NULs (then `_clean` makes the cleaned copy)."""
    if depth > MAX_DEPTH:
        raise _Refused("FormationViolation", f"Nesting deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return not (value.isascii() and "\x00" not in value) and _clean_string(value) != value
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return False
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise _Refused("TypeConstraintViolation", "Integer out of the 32-bit range of OCPP integers")
        return False
    changed = False
    if isinstance(value, list):
        for item in value:
            changed = _must_clean(item, depth + 1) or changed
    elif isinstance(value, dict):
        for key, item in value.items():
            changed = _must_clean(key, depth + 1) or changed
            changed = _must_clean(item, depth + 1) or changed
    return changed


def parse_frame(text: str) -> Frame | FrameProblem:
    """Check the OCPP-J envelope of `text` and, for a CALL, its payload (see module doc)."""
    try:
        decoded = decode_json(text)
    except _Refused as refused:
        match = _UNIQUE_ID_PREFIX.match(text)
        if match is None:
            return FrameProblem(None, refused.code, refused.description)
        return FrameProblem(match.group(2), refused.code, refused.description, int(match.group(1)))
    if not isinstance(decoded, list) or len(decoded) < 3:
        return FrameProblem(_unique_id_of(decoded), "FormationViolation", "Frame is not an OCPP-J array")
    unique_id = _unique_id_of(decoded)
    if unique_id is None:
        return FrameProblem(None, "FormationViolation", "Message id must be a string of 1 to 36 characters")
    kind = decoded[0] if isinstance(decoded[0], int) and not isinstance(decoded[0], bool) else None
    try:
        changed = not _plainly_clean(text) and _must_clean(decoded)
        message = _clean(decoded) if changed else decoded  # a copy only when a string changes
    except _Refused as refused:
        return FrameProblem(unique_id, refused.code, refused.description, kind)
    assert isinstance(message, list)  # noqa: S101 - _clean keeps the shape
    routed = json.dumps(message, separators=(",", ":")) if changed else text
    if kind == CALL:
        return _parse_call(message, unique_id, routed)
    if kind in (CALLRESULT, CALLERROR):
        return Frame(kind, unique_id, "", message[2], message, routed)
    return FrameProblem(unique_id, "FormationViolation", f"Unknown message type id {kind!r}")


def _unique_id_of(message: object) -> str | None:
    if isinstance(message, list) and len(message) > 1:
        candidate = message[1]
        if isinstance(candidate, str) and 0 < len(candidate) <= UNIQUE_ID_MAX_LENGTH:
            return candidate
    return None


def _parse_call(message: list[object], unique_id: str, text: str) -> Frame | FrameProblem:
    if len(message) != 4 or not isinstance(message[2], str) or not isinstance(message[3], dict):
        return FrameProblem(unique_id, "FormationViolation", "A CALL is [2, id, action, {payload}]")
    action, payload = message[2], message[3]
    if action not in CHARGER_INITIATED:
        if action in _KNOWN_16_ACTIONS:
            return FrameProblem(unique_id, "NotSupported", f"{action} is not sent by a charge point")
        return FrameProblem(unique_id, "NotImplemented", f"Unknown action {action[:50]!r}")
    problem = payload_problem(action, payload)
    if problem is not None:
        code, description = problem
        return FrameProblem(unique_id, code, description)
    return Frame(CALL, unique_id, action, payload, message, text)


def payload_problem(action: str, payload: dict[str, object]) -> tuple[str, str] | None:
    """(error code, description) when a charger's `action` payload breaks the 1.6 schema
    or a range the spec states; None when it is fine."""
    problem = schema_problem(CALL, action, payload)
    if problem is not None:
        return problem.code, problem.description
    minimum = _MIN_CONNECTOR_ID.get(action)
    connector_id = payload.get("connectorId")
    if minimum is not None and isinstance(connector_id, int) and connector_id < minimum:
        return "PropertyConstraintViolation", f"connectorId must be >= {minimum} in {action}"
    return None


def respell_error_code(code: str) -> str:
    return _CODE_SPELLING_16.get(code, code)
