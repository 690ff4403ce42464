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
    only takes watts gets the same limit as limit × phases × 230 V.
    """
    if allowed is None:
        return "A"
    units = {unit.strip().lower() for unit in allowed.split(",") if unit.strip()}
    return "W" if units and "current" not in units and "power" in units else "A"


def _schedule_limit(limit_a: float, number_phases: int, unit: str) -> float:
    if unit == "W":
        return round_limit(round_limit(limit_a) * number_phases * VOLTAGE_V)
    return round_limit(limit_a)


def _profile(
    profile_id: int, purpose: str, limit_a: float, number_phases: int, unit: str = "A", **extra: Any
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
                {"startPeriod": 0, "limit": _schedule_limit(limit_a, number_phases, unit),
                 "numberPhases": number_phases}
            ],
        },
    }


def tx_default_payload(limit_a: float, number_phases: int, unit: str = "A") -> dict[str, Any]:
    profile = _profile(TX_DEFAULT_PROFILE_ID, TX_DEFAULT, limit_a, number_phases, unit)
    return {"connectorId": 0, "csChargingProfiles": profile}


def tx_payload(
    connector_id: int, transaction_id: int, limit_a: float, number_phases: int, unit: str = "A"
) -> dict[str, Any]:
    profile = _profile(TX_PROFILE_ID_BASE + connector_id, TX, limit_a, number_phases, unit,
                       transactionId=transaction_id)
    return {"connectorId": connector_id, "csChargingProfiles": profile}


def needs_sending(
    *,
    previous_limit_a: float | None,
    previous_paused: bool | None,
    previous_transaction_id: int | None,
    previous_ok: bool,
    seconds_since_sent: float,
    limit_a: float,
    paused: bool,
    transaction_id: int | None,
    hysteresis_a: float,
    retry_after_s: float = 60.0,
) -> bool:
    """Whether a new limit must be sent to the charger.

    Decreases are always sent (capacity is only safe if chargers actually lower); increases
    only past the hysteresis, so a noisy measurement does not rewrite profiles every tick.
    A profile the charger did not accept is retried after `retry_after_s`.
    """
    if previous_limit_a is None or previous_transaction_id != transaction_id or previous_paused != paused:
        return True
    if not previous_ok:
        return seconds_since_sent >= retry_after_s
    if round_limit(limit_a) < previous_limit_a:
        return True
    return round_limit(limit_a) - previous_limit_a >= hysteresis_a
