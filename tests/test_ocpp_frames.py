"""OCPP-J frame decisions without a server: every hostile value gets its spec code."""

from __future__ import annotations

import json

import pytest

from chargers.frames import Frame, FrameProblem, parse_frame
from chargers.identity import BadIdentity, check_identity, identity_from_path
from chargers.ratelimit import RateLimiter

STATUS = '[2,"m1","StatusNotification",{"connectorId":%s,"errorCode":"NoError","status":"%s"}]'


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('[2,"m1","Heartbeat",{"x":NaN}]', "FormationViolation"),
        ('[2,"m1","Heartbeat",{"x":Infinity}]', "FormationViolation"),
        ('[2,"m1","Heartbeat",{"x":-Infinity}]', "FormationViolation"),
        ('[2,"m1","Heartbeat",{"x":1e309}]', "FormationViolation"),
        ('[2,"m1","Heartbeat",{"x":' + "[" * 100_000 + "]" * 100_000 + "}]", "FormationViolation"),
        ('[2,"m1","Heartbeat",{"x":' + "[" * 40 + "]" * 40 + "}]", "FormationViolation"),
        ('[2,"m1","Heartbeat",{"x":"1' + "0" * 5000 + '"}]', "FormationViolation"),  # schema: no field x
        (STATUS % (-1, "Available"), "PropertyConstraintViolation"),
        (STATUS % (2**63, "Available"), "TypeConstraintViolation"),
        (STATUS % (2**31, "Available"), "TypeConstraintViolation"),
        (STATUS % (1, "Bogus"), "PropertyConstraintViolation"),
        ('[2,"m1","StartTransaction",{"connectorId":0,"idTag":"A","meterStart":0,"timestamp":"2026-01-01T00:00:00Z"}]',
         "PropertyConstraintViolation"),
        ('[2,"m1","MeterValues",{"connectorId":1,"meterValue":[]}]', "OccurenceConstraintViolation"),
        ('[2,"m1","BootNotification",{"chargePointVendor":"A\\u0000B","chargePointModel":"M"}]',
         "PropertyConstraintViolation"),
        ('[2,"m1","BootNotification",{"chargePointVendor":"A\\ud800","chargePointModel":"M"}]',
         "PropertyConstraintViolation"),
        ('[2,"m1","BootNotification",{"chargePointVendor":"A","chargePointModel":"M","x\\u0000y":1}]',
         "PropertyConstraintViolation"),
        ('[2,"m1","BootNotification",{"chargePointVendor":"' + "V" * 21 + '","chargePointModel":"M"}]',
         "TypeConstraintViolation"),
        ('[2,"m1","Authorize",{}]', "ProtocolError"),
    ],
)
def test_it_answers_each_hostile_call_with_its_error_code(text, code):
    problem = parse_frame(text)
    assert isinstance(problem, FrameProblem)
    assert (problem.code, problem.unique_id) == (code, "m1")
    error = json.loads(problem.call_error())
    assert error[:3] == [4, "m1", code] and error[4] == {}
    assert len(error[3]) <= 200  # the description never echoes a big payload


def test_it_drops_the_trailing_nuls_firmware_pads_strings_with():
    frame = parse_frame('[2,"m1","BootNotification",{"chargePointVendor":"SN12\\u0000\\u0000","chargePointModel":"M"}]')
    assert isinstance(frame, Frame)
    assert frame.payload == {"chargePointVendor": "SN12", "chargePointModel": "M"}
    assert json.loads(frame.text)[3]["chargePointVendor"] == "SN12"  # what the library routes


def test_it_keeps_good_frames_as_they_are():
    text = STATUS % (0, "Available")
    frame = parse_frame(text)
    assert isinstance(frame, Frame) and frame.text is text
    assert parse_frame('[2,"m1","BootNotification",{"chargePointVendor":"Bösch","chargePointModel":"M"}]').payload[
        "chargePointVendor"] == "Bösch"


def test_answers_keep_their_whole_array_for_the_log():
    frame = parse_frame('[4,"m9","NotSupported","no",{"why":"old firmware"}]')
    assert isinstance(frame, Frame)
    assert frame.message == [4, "m9", "NotSupported", "no", {"why": "old firmware"}]


def test_a_frame_without_a_usable_id_has_no_call_error():
    assert parse_frame('{"x":NaN}').unique_id is None
    assert parse_frame("[2,NaN]").unique_id is None


@pytest.mark.parametrize(
    ("raw", "query", "identity"),
    [
        (b"/ocpp/CP001", b"", "CP001"),
        (b"/ocpp/RDAM%20123", b"", "RDAM 123"),  # OCPP-J §3.1.1 example 2
        (b"/ocpp/CP-1/", b"", "CP-1"),
        (b"/ocpp/" + b"A" * 48, b"", "A" * 48),
    ],
)
def test_it_reads_a_valid_identity_from_the_raw_path(raw, query, identity):
    assert identity_from_path(raw, query) == identity


@pytest.mark.parametrize(
    ("raw", "query"),
    [
        (b"/ocpp/", b""),
        (b"/ocpp/" + b"A" * 49, b""),
        (b"/ocpp/a/b", b""),
        (b"/ocpp/a%2Fb", b""),
        (b"/ocpp/a%252Fb", b""),  # decoded once: "a%2Fb", never "a/b"
        (b"/ocpp/..", b""),
        (b"/ocpp/.", b""),
        (b"/ocpp/%2E%2E", b""),
        (b"/ocpp/CP%00", b""),
        (b"/ocpp/Q1", b"x=1"),
        (b"/ocpp/Q1%3Fx=1", b""),
        (b"/ocpp/%C3%A9", b""),
        (b"/ocpp/%FF", b""),
        (b"/ocpp/%20CP", b""),
        (b"/other/CP1", b""),
    ],
)
def test_it_refuses_every_other_identity(raw, query):
    with pytest.raises(BadIdentity):
        identity_from_path(raw, query)


def test_the_grammar_is_the_one_the_admin_can_check():
    check_identity("CP-001_a.b:c")
    with pytest.raises(BadIdentity):
        check_identity("CP\t1")


def test_the_rate_limiter_counts_per_key_and_window():
    now = [0.0]
    limiter = RateLimiter(limit=2, window_s=60, clock=lambda: now[0])
    assert limiter.hit("a") and limiter.hit("a") and not limiter.hit("a")
    assert not limiter.allowed("a") and limiter.allowed("b")
    now[0] = 61.0
    assert limiter.allowed("a")
    limiter.hit("a")
    limiter.reset("a")
    assert limiter.allowed("a")


def test_the_rate_limiter_stays_bounded_under_a_flood_of_keys():
    limiter = RateLimiter(limit=1, window_s=60, max_keys=100)
    for key in range(10_000):
        limiter.hit(key)
    assert len(limiter._windows) <= 100


@pytest.mark.parametrize("text", ['[3,"r1",{"x":NaN}]', '[4,"r1","GenericError","",{"d":1e309}]',
                                  '[3,"r1",{"s":"a\\u0000b"}]'])
def test_a_bad_answer_is_never_answered_with_a_call_error(text):
    problem = parse_frame(text)
    assert isinstance(problem, FrameProblem) and problem.unique_id == "r1"
    assert not problem.answerable
    assert parse_frame('[9,"r1",{}]').answerable  # an unknown type still gets its FormationViolation
