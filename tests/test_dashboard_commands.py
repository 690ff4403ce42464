"""Dashboard commands: form → OCPP payload, and every failure said in one clear sentence."""

from __future__ import annotations

from unittest import mock

import pytest

from chargers.commands import ChargerCallError, ChargerOffline, ChargerTimeout
from dashboard import commands


def run(name: str, answer: object = None, **data: str) -> tuple[commands.Outcome, mock.MagicMock]:
    side_effect = answer if isinstance(answer, Exception) else None
    with mock.patch("dashboard.commands.ocpp.send_call", return_value=answer, side_effect=side_effect) as send:
        return commands.run(charge_point_id="CP-1", name=name, data=data, user="op"), send


@pytest.mark.parametrize(("name", "data", "action", "payload"), [
    ("soft_reset", {}, "Reset", {"type": "Soft"}),
    ("hard_reset", {}, "Reset", {"type": "Hard"}),
    ("remote_start", {"id_tag": " TAG1 ", "connector_id": "2"}, "RemoteStartTransaction",
     {"idTag": "TAG1", "connectorId": 2}),
    ("remote_start", {"id_tag": "TAG1", "connector_id": ""}, "RemoteStartTransaction", {"idTag": "TAG1"}),
    ("remote_stop", {"transaction_id": "42"}, "RemoteStopTransaction", {"transactionId": 42}),
    ("unlock", {"connector_id": "1"}, "UnlockConnector", {"connectorId": 1}),
    ("availability", {"connector_id": "0", "type": "Inoperative"}, "ChangeAvailability",
     {"connectorId": 0, "type": "Inoperative"}),
    ("trigger", {"requested_message": "MeterValues", "connector_id": "1"}, "TriggerMessage",
     {"requestedMessage": "MeterValues", "connectorId": 1}),
    ("clear_cache", {}, "ClearCache", {}),
    ("update_firmware", {"location": "https://fw.example/a.bin", "retrieve_date": "2026-12-02T22:00:00+00:00"},
     "UpdateFirmware", {"location": "https://fw.example/a.bin", "retrieveDate": "2026-12-02T22:00:00+00:00"}),
    ("get_diagnostics", {"location": "ftp://diag.example/up/"}, "GetDiagnostics",
     {"location": "ftp://diag.example/up/"}),
])
def test_it_sends_the_request_the_form_describes(name, data, action, payload):
    outcome, send = run(name, {"status": "Accepted"}, **data)
    send.assert_called_once_with("CP-1", action, payload, timeout_s=commands.COMMAND_TIMEOUT_S)
    assert outcome.ok and "answered Accepted" in outcome.message


@pytest.mark.parametrize(("name", "data", "problem"), [
    ("remote_start", {"id_tag": ""}, "give the badge"),
    ("remote_start", {"id_tag": "X" * 21}, "at most 20 characters"),
    ("remote_stop", {"transaction_id": "abc"}, "whole number"),
    ("unlock", {"connector_id": "0"}, "at least 1"),
    ("availability", {"connector_id": "1", "type": "Off"}, "Operative or Inoperative"),
    ("trigger", {"requested_message": "Reset"}, "choose a message"),
    ("update_firmware", {"location": "file:///etc/passwd"}, "give a URL"),
    ("update_firmware", {"location": "https://fw.example/a.bin", "retrieve_date": "tomorrow"}, "date and time"),
    ("nonsense", {}, "Unknown command"),
])
def test_it_refuses_bad_input_before_sending(name, data, problem):
    outcome, send = run(name, {"status": "Accepted"}, **data)
    assert not outcome.ok and problem in outcome.message
    send.assert_not_called()


@pytest.mark.parametrize(("answer", "ok", "message"), [
    ({"status": "Rejected"}, False, "Soft reset: CP-1 answered Rejected."),
    (ChargerOffline("charger 'CP-1' is offline"), False, "Soft reset not sent: charger 'CP-1' is offline."),
    (ChargerTimeout("late"), False, "Soft reset: CP-1 did not answer within 15 s."),
    (ChargerCallError("NotSupported", "no resets here"), False,
     "Soft reset: the charger answered with an error (NotSupported: no resets here)."),
])
def test_it_says_what_became_of_the_request(answer, ok, message):
    outcome, _ = run("soft_reset", answer)
    assert (outcome.ok, outcome.message) == (ok, message)
