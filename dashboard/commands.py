"""The commands an operator may send from a charger's page, as OCPP 1.6 requests.

Each command turns the posted form into a payload (refusing bad input with a sentence a person
understands), sends it with `chargers.commands.send_call` — the same path as `manage.py
ocpp_call` — and turns the answer or the failure into one line for the page. Nothing here
decides *who* may send: the views check the role before calling `run`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from chargers import commands as ocpp
from evce import clock

logger = logging.getLogger(__name__)

# A person is waiting in front of the page: give up sooner than the system-wide call timeout.
COMMAND_TIMEOUT_S = 15.0
TRIGGERABLE = ("BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification", "Heartbeat",
               "MeterValues", "StatusNotification")
# Answers that mean the charger did what was asked.
SUCCESS = {"Accepted", "Unlocked", "Scheduled", "RebootRequired"}


class BadInput(ValueError):
    """The form cannot become a valid request; the message says what to fix."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    status: str = ""  # the charger's answer status, when it answered
    result: dict[str, Any] | None = None  # the CALLRESULT payload, when it answered


@dataclass(frozen=True)
class Command:
    name: str
    label: str
    action: str
    build: Callable[[Mapping[str, str]], dict[str, Any]]


def _int(data: Mapping[str, str], key: str, label: str, *, minimum: int = 0, required: bool = True) -> int | None:
    raw = (data.get(key) or "").strip()
    if not raw:
        if required:
            raise BadInput(f"give the {label}")
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"the {label} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise BadInput(f"the {label} must be at least {minimum}")
    return value


def _remote_start(data: Mapping[str, str]) -> dict[str, Any]:
    id_tag = (data.get("id_tag") or "").strip()
    if not id_tag:
        raise BadInput("give the badge (id tag) to start with")
    if len(id_tag) > 20:
        raise BadInput("an id tag has at most 20 characters")
    payload: dict[str, Any] = {"idTag": id_tag}
    connector = _int(data, "connector_id", "connector", minimum=1, required=False)
    if connector is not None:
        payload["connectorId"] = connector
    return payload


def _trigger(data: Mapping[str, str]) -> dict[str, Any]:
    message = data.get("requested_message", "")
    if message not in TRIGGERABLE:
        raise BadInput(f"choose a message to trigger: {', '.join(TRIGGERABLE)}")
    payload: dict[str, Any] = {"requestedMessage": message}
    connector = _int(data, "connector_id", "connector", minimum=1, required=False)
    if connector is not None:
        payload["connectorId"] = connector
    return payload


def _availability(data: Mapping[str, str]) -> dict[str, Any]:
    kind = data.get("type", "")
    if kind not in ("Operative", "Inoperative"):
        raise BadInput("choose Operative or Inoperative")
    return {"connectorId": _int(data, "connector_id", "connector (0 = whole charger)"), "type": kind}


def _url(data: Mapping[str, str]) -> str:
    location = (data.get("location") or "").strip()
    if not location.startswith(("http://", "https://", "ftp://", "ftps://", "sftp://")):
        raise BadInput("give a URL the charger can reach (http, https, ftp, ftps or sftp)")
    return location


def _update_firmware(data: Mapping[str, str]) -> dict[str, Any]:
    when = (data.get("retrieve_date") or "").strip()
    moment = parse_datetime(when) if when else clock.now()
    if moment is None:
        raise BadInput("the retrieve time is a date and time, e.g. 2026-12-02T22:00")
    if moment.tzinfo is None:
        moment = timezone.make_aware(moment)
    return {"location": _url(data), "retrieveDate": moment.astimezone(dt.UTC).isoformat()}


COMMANDS: dict[str, Command] = {command.name: command for command in (
    Command("soft_reset", "Soft reset", "Reset", lambda data: {"type": "Soft"}),
    Command("hard_reset", "Hard reset", "Reset", lambda data: {"type": "Hard"}),
    Command("remote_start", "Remote start", "RemoteStartTransaction", _remote_start),
    Command("remote_stop", "Remote stop", "RemoteStopTransaction",
            lambda data: {"transactionId": _int(data, "transaction_id", "session number")}),
    Command("unlock", "Unlock connector", "UnlockConnector",
            lambda data: {"connectorId": _int(data, "connector_id", "connector", minimum=1)}),
    Command("availability", "Change availability", "ChangeAvailability", _availability),
    Command("trigger", "Trigger message", "TriggerMessage", _trigger),
    Command("clear_cache", "Clear authorization cache", "ClearCache", lambda data: {}),
    Command("update_firmware", "Update firmware", "UpdateFirmware", _update_firmware),
    Command("get_diagnostics", "Get diagnostics", "GetDiagnostics", lambda data: {"location": _url(data)}),
)}


def run(*, charge_point_id: str, name: str, data: Mapping[str, str], user: str) -> Outcome:
    """Send command `name` to the charger; never raises for a charger's or a user's mistake."""
    command = COMMANDS.get(name)
    if command is None:
        return Outcome(False, f"Unknown command {name!r}.")
    try:
        payload = command.build(data)
    except BadInput as error:
        return Outcome(False, f"{command.label}: {error}.")
    logger.info("dashboard: %s sends %s %s to %s", user, command.action, payload, charge_point_id)
    return call(charge_point_id=charge_point_id, label=command.label, action=command.action, payload=payload)


def call(*, charge_point_id: str, label: str, action: str, payload: dict[str, Any]) -> Outcome:
    """One request, its answer or failure as a sentence (offline, timeout, CALLERROR, refused)."""
    try:
        result = ocpp.send_call(charge_point_id, action, payload, timeout_s=COMMAND_TIMEOUT_S)
    except ocpp.ChargerOffline as error:
        return Outcome(False, f"{label} not sent: {error}.")
    except ocpp.ChargerTimeout:
        return Outcome(False, f"{label}: {charge_point_id} did not answer within {COMMAND_TIMEOUT_S:g} s.")
    except ocpp.ChargerCallError as error:
        return Outcome(False, f"{label}: the charger answered with an error ({error.code}: {error.description}).")
    except ocpp.CallFailed as error:
        return Outcome(False, f"{label} failed: {error}.")
    status = result.get("status")
    if status is None:
        return Outcome(True, f"{label}: answered.", result=result)
    return Outcome(status in SUCCESS, f"{label}: {charge_point_id} answered {status}.", str(status), result)
