"""OCPP-J 1.6 frame checks done before the `ocpp` library routes a message.

The library answers an unknown action with NotSupported and a known-but-unhandled one
with NotImplemented; OCPP-J 1.6 §4.2.3 defines them the other way round. It also drops
unparsable frames without an answer. This module decides those cases per the spec.
Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ocpp.v16.enums import Action

CALL, CALLRESULT, CALLERROR = 2, 3, 4

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

_KNOWN_16_ACTIONS = frozenset(action.value for action in Action)
_UNIQUE_ID_PREFIX = re.compile(r'^\s*\[\s*[234]\s*,\s*"([^"\\]{1,36})"')

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

    def call_error(self) -> str:
        return json.dumps([CALLERROR, self.unique_id, self.code, self.description, {}])


@dataclass(frozen=True)
class Frame:
    message_type: int
    unique_id: str
    action: str  # empty for CALLRESULT / CALLERROR
    payload: object


def parse_frame(text: str) -> Frame | FrameProblem:
    """Check the OCPP-J envelope of `text`; the payload schema is left to the library."""
    try:
        message = json.loads(text)
    except ValueError:
        match = _UNIQUE_ID_PREFIX.match(text)
        return FrameProblem(match.group(1) if match else None, "FormationViolation", "Frame is not valid JSON")
    if not isinstance(message, list) or len(message) < 3:
        return FrameProblem(_unique_id_of(message), "FormationViolation", "Frame is not an OCPP-J array")
    unique_id = _unique_id_of(message)
    if unique_id is None:
        return FrameProblem(None, "FormationViolation", "Message id must be a string of 1 to 36 characters")
    kind = message[0]
    if kind == CALL:
        return _parse_call(message, unique_id)
    if kind in (CALLRESULT, CALLERROR) and not isinstance(kind, bool):
        return Frame(kind, unique_id, "", message[2])
    return FrameProblem(unique_id, "FormationViolation", f"Unknown message type id {kind!r}")


def _unique_id_of(message: object) -> str | None:
    if isinstance(message, list) and len(message) > 1:
        candidate = message[1]
        if isinstance(candidate, str) and 0 < len(candidate) <= 36:
            return candidate
    return None


def _parse_call(message: list[object], unique_id: str) -> Frame | FrameProblem:
    if len(message) != 4 or not isinstance(message[2], str) or not isinstance(message[3], dict):
        return FrameProblem(unique_id, "FormationViolation", "A CALL is [2, id, action, {payload}]")
    action = message[2]
    if action not in CHARGER_INITIATED:
        if action in _KNOWN_16_ACTIONS:
            return FrameProblem(unique_id, "NotSupported", f"{action} is not sent by a charge point")
        return FrameProblem(unique_id, "NotImplemented", f"Unknown action {action!r}")
    return Frame(CALL, unique_id, action, message[3])


def respell_error_code(code: str) -> str:
    return _CODE_SPELLING_16.get(code, code)
