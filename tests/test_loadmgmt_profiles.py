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


def test_a_charger_that_takes_only_watts_gets_watts():
    assert profiles.rate_unit_for(None) == "A"
    assert profiles.rate_unit_for("Current,Power") == "A"
    assert profiles.rate_unit_for("Power") == "W"
    payload = profiles.tx_payload(1, 9, 16.0, 3, "W", phases_in_use=3)
    validate_call("SetChargingProfile", payload)
    schedule = payload["csChargingProfiles"]["chargingSchedule"]
    assert schedule["chargingRateUnit"] == "W"
    assert schedule["chargingSchedulePeriod"][0]["limit"] == 11040.0  # 16 A x 3 phases seen drawing x 230 V


def test_a_watt_limit_assumes_one_phase_until_the_car_is_seen_on_three():
    # A single-phase car on a three-phase charger may take a whole W limit on one phase.
    unknown = profiles.tx_payload(1, 9, 16.0, 3, "W")["csChargingProfiles"]["chargingSchedule"]
    assert unknown["chargingSchedulePeriod"][0]["limit"] == 3680.0  # 16 A x 230 V
    default = profiles.tx_default_payload(16.0, 3, "W")["csChargingProfiles"]["chargingSchedule"]
    assert default["chargingSchedulePeriod"][0]["limit"] == 3680.0
