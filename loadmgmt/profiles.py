"""OCPP 1.6 charging profiles the controller sends (spec §3.13, §7.12-7.14). Pure functions.

- TxDefaultProfile on connector 0: the safe default every charger holds, so that a new car
  never draws more than its fair share before the loop runs, or after the controller dies.
- TxProfile on the connector of a running transaction: the loop's limit (0 A = paused).
No ChargePointMaxProfile: it would cap the loop's later raises at the safe default.
Fixed profile ids mean each new profile replaces the previous one of the same purpose.
"""

from __future__ import annotations

from typing import Any

TX_DEFAULT = "TxDefaultProfile"
TX = "TxProfile"
TX_DEFAULT_PROFILE_ID = 1000
TX_PROFILE_ID_BASE = 2000
STACK_LEVEL = 0  # some chargers accept only stack level 0


def round_limit(limit_a: float) -> float:
    """One decimal at most (OCPP schema), rounded down so sums never grow."""
    return int(max(0.0, limit_a) * 10 + 1e-9) / 10


VOLTAGE_V = 230.0
RATE_UNIT_KEY = "ChargingScheduleAllowedChargingRateUnit"


def rate_unit_for(allowed: str | None) -> str:
    """"A" unless the charger says it accepts only power ("Power" in its configuration key).

    Amps are preferred: they are what breakers are rated in, and per phase. A charger that
    only takes watts gets limit × 230 V × the phases its car was seen drawing on (1 when not
    known): a single-phase car on a three-phase charger may take a whole W limit on one phase.
    """
    if allowed is None:
        return "A"
    units = {unit.strip().lower() for unit in allowed.split(",") if unit.strip()}
    return "W" if units and "current" not in units and "power" in units else "A"


def schedule_limit(limit_a: float, unit: str, phases_in_use: int = 1) -> float:
    """The schedule's `limit` for `limit_a` amps per phase: amps, or watts at the phases in use."""
    if unit == "W":
        return round_limit(round_limit(limit_a) * max(1, phases_in_use) * VOLTAGE_V)
    return round_limit(limit_a)


def _profile(
    profile_id: int, purpose: str, limit_a: float, number_phases: int, unit: str = "A", phases_in_use: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "chargingProfileId": profile_id,
        "stackLevel": STACK_LEVEL,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Relative",
        **extra,
        "chargingSchedule": {
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": schedule_limit(limit_a, unit, phases_in_use),
                 "numberPhases": number_phases}
            ],
        },
    }


def tx_default_payload(limit_a: float, number_phases: int, unit: str = "A") -> dict[str, Any]:
    profile = _profile(TX_DEFAULT_PROFILE_ID, TX_DEFAULT, limit_a, number_phases, unit)
    return {"connectorId": 0, "csChargingProfiles": profile}


def tx_payload(
    connector_id: int, transaction_id: int, limit_a: float, number_phases: int, unit: str = "A",
    phases_in_use: int = 1,
) -> dict[str, Any]:
    profile = _profile(TX_PROFILE_ID_BASE + connector_id, TX, limit_a, number_phases, unit, phases_in_use,
                       transactionId=transaction_id)
    return {"connectorId": connector_id, "csChargingProfiles": profile}
