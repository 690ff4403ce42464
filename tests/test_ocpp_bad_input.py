"""Bad frames get the OCPP-J 1.6 CALLERROR they deserve; the link and the data survive."""

from __future__ import annotations

import json

import pytest
from ocpp.v16 import call

from chargers.models import Charger, OcppMessage
from transactions.models import Transaction


@pytest.fixture
def charger(accepted_charger):
    return accepted_charger("CP-BAD")


def error_of(sim, frame: str):
    sim.send_raw(frame)
    response = sim.recv_raw_response()
    return response.error_code, response.unique_id


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('[2,"m1","FlyToTheMoon",{}]', "NotImplemented"),
        ('[2,"m1","Reset",{"type":"Hard"}]', "NotSupported"),
        ('[2,"m1","Heartbeat",{"unexpected":1}]', "FormationViolation"),
        ('[2,"m1","StatusNotification",{"connectorId":"one","errorCode":"NoError","status":"Available"}]',
         "TypeConstraintViolation"),
        ('[2,"m1","Authorize",{}]', "ProtocolError"),
        ('[2,"m1","Authorize",{"idTag": 12', "FormationViolation"),
        ('[9,"m1","Heartbeat",{}]', "FormationViolation"),
        ('[2,"m1","Heartbeat"]', "FormationViolation"),
        ('[2,"m1","StartTransaction",{"connectorId":1,"idTag":"X","meterStart":0,"timestamp":"yesterday"}]',
         "TypeConstraintViolation"),
    ],
)
def test_bad_calls_get_the_right_call_error(charger, frame, code):
    assert error_of(charger, frame) == (code, "m1")
    # The connection is still usable and nothing was stored by the bad frame.
    assert charger.call(call.Heartbeat()).current_time
    assert not Transaction.objects.exists()


def test_the_error_is_logged(charger):
    error_of(charger, '[2,"m7","FlyToTheMoon",{}]')
    logged = OcppMessage.objects.get(charge_point_id="CP-BAD", unique_id="m7", message_type="CALLERROR")
    assert "NotImplemented" in logged.error


def test_garbage_that_is_not_ocpp_closes_the_connection(charger):
    Transaction.objects.create(charger=Charger.objects.get(charge_point_id="CP-BAD"), connector_id=1, id_tag="KEEP")
    charger.send_raw("hello, is this thing on?")
    assert charger.wait_closed() == 4002
    assert Transaction.objects.filter(id_tag="KEEP").exists()


def test_binary_frames_close_the_connection(charger):
    charger.send_raw(b"\x00\x01")
    assert charger.wait_closed() == 4003


def test_a_late_call_result_for_an_unknown_id_is_ignored(charger):
    charger.send_raw(json.dumps([3, "never-asked", {}]))
    assert charger.call(call.Heartbeat()).current_time
