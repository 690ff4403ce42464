"""Charging profile payloads are valid OCPP 1.6 and are only sent when a limit changed."""

from __future__ import annotations

from chargers.commands import validate_call
from loadmgmt import profiles


def test_payloads_pass_the_ocpp_schema():
    validate_call("SetChargingProfile", profiles.tx_default_payload(15.75, 3))
    validate_call("SetChargingProfile", profiles.tx_payload(2, 41, 0.0, 1))
    payload = profiles.tx_payload(2, 41, 13.37, 3)
    assert payload["connectorId"] == 2
    assert payload["csChargingProfiles"]["transactionId"] == 41
    assert payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 13.3


def decide(**changes):
    state = dict(previous_limit_a=16.0, previous_paused=False, previous_transaction_id=7, previous_ok=True,
                 seconds_since_sent=5.0, limit_a=16.0, paused=False, transaction_id=7, hysteresis_a=1.0)
    state.update(changes)
    return profiles.needs_sending(**state)


def test_small_increases_wait_for_the_hysteresis_but_decreases_go_at_once():
    assert not decide(limit_a=16.5)
    assert decide(limit_a=17.0)
    assert decide(limit_a=15.9)


def test_new_transactions_pause_changes_and_failures_are_sent():
    assert decide(previous_limit_a=None)
    assert decide(transaction_id=8)
    assert decide(paused=True, limit_a=0.0)
    assert not decide(previous_ok=False, seconds_since_sent=10)
    assert decide(previous_ok=False, seconds_since_sent=61)


def test_a_charger_that_takes_only_watts_gets_watts():
    assert profiles.rate_unit_for(None) == "A"
    assert profiles.rate_unit_for("Current,Power") == "A"
    assert profiles.rate_unit_for("Power") == "W"
    payload = profiles.tx_payload(1, 9, 16.0, 3, "W")
    validate_call("SetChargingProfile", payload)
    schedule = payload["csChargingProfiles"]["chargingSchedule"]
    assert schedule["chargingRateUnit"] == "W"
    assert schedule["chargingSchedulePeriod"][0]["limit"] == 11040.0  # 16 A x 3 x 230 V
