"""OCPP 1.6 §3.13 composite limit of the simulated charger: one test per rule."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from simulator.composite import (
    ChargingProfile,
    ProfileLimits,
    ProfileStore,
    share_charge_point_max,
)

T0 = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def profile(
    profile_id: int,
    purpose: str,
    limits: float | list[tuple[int, float]],
    *,
    stack: int = 0,
    unit: str = "A",
    kind: str = "Relative",
    phases: int | None = None,
    **extra: Any,
) -> ChargingProfile:
    periods = [(0, limits)] if isinstance(limits, int | float) else limits
    schedule: dict[str, Any] = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [
            {"startPeriod": start, "limit": limit, **({"numberPhases": phases} if phases else {})}
            for start, limit in periods
        ],
    }
    for key in ("duration", "startSchedule"):
        if key in extra:
            schedule[key] = extra.pop(key)
    payload = {"chargingProfileId": profile_id, "stackLevel": stack, "chargingProfilePurpose": purpose,
               "chargingProfileKind": kind, "chargingSchedule": schedule, **extra}
    return ChargingProfile.from_ocpp(payload)


def store(connectors: int = 1, **limits: Any) -> ProfileStore:
    return ProfileStore(ProfileLimits(number_of_connectors=connectors, **limits))


def install(s: ProfileStore, connector: int, p: ChargingProfile, tx: int | None = None) -> str:
    status, _ = s.install(connector, p, transaction_id=tx, now=T0)
    return status


def test_it_has_no_limit_without_profiles():
    assert store().composite(1, T0).limit_a is None


def test_it_caps_everything_with_charge_point_max():
    s = store()
    install(s, 0, profile(1, "ChargePointMaxProfile", 20))
    install(s, 0, profile(2, "TxDefaultProfile", 32))
    install(s, 1, profile(3, "TxProfile", 25), tx=7)
    assert s.composite(1, T0, transaction_id=7).limit_a == 20


def test_it_lets_a_tx_profile_override_the_default_only_for_its_transaction():
    s = store()
    install(s, 0, profile(1, "TxDefaultProfile", 10))
    assert install(s, 1, profile(2, "TxProfile", 25, transactionId=7), tx=7) == "Accepted"
    assert s.composite(1, T0, transaction_id=7).limit_a == 25
    assert s.composite(1, T0, transaction_id=7).tx_purpose == "TxProfile"
    assert s.composite(1, T0, transaction_id=8).limit_a == 10


def test_it_binds_a_tx_profile_without_transaction_id_to_the_running_one():
    s = store()
    install(s, 0, profile(1, "TxDefaultProfile", 10))
    install(s, 1, profile(2, "TxProfile", 25), tx=7)
    assert s.profiles(1, "TxProfile")[0].transaction_id == 7
    assert s.composite(1, T0, transaction_id=9).limit_a == 10


def test_it_applies_a_connector_zero_default_to_every_connector_unless_one_has_its_own():
    s = store(connectors=2)
    install(s, 0, profile(1, "TxDefaultProfile", 16))
    install(s, 2, profile(2, "TxDefaultProfile", 8))
    assert s.composite(1, T0).limit_a == 16
    assert s.composite(2, T0).limit_a == 8


def test_it_lets_the_highest_stack_level_in_force_win():
    s = store()
    install(s, 0, profile(1, "TxDefaultProfile", 16, stack=0))
    install(s, 0, profile(2, "TxDefaultProfile", 6, stack=2, duration=60))
    assert s.composite(1, at(10)).limit_a == 6
    # A profile with a duration falls back to the lower stack level when it runs out.
    assert s.composite(1, at(61), transaction_start=T0).limit_a == 16


def test_it_ignores_a_profile_outside_its_validity():
    s = store()
    install(s, 0, profile(1, "TxDefaultProfile", 16))
    install(s, 0, profile(2, "TxDefaultProfile", 6, stack=1, validFrom=at(100).isoformat(),
                          validTo=at(200).isoformat()))
    assert s.composite(1, at(50)).limit_a == 16
    assert s.composite(1, at(150)).limit_a == 6
    assert s.composite(1, at(250)).limit_a == 16


def test_it_replaces_same_purpose_and_stack_level_on_the_same_connector():
    s = store()
    install(s, 0, profile(1, "TxDefaultProfile", 16))
    install(s, 0, profile(5, "TxDefaultProfile", 12))
    assert [p.profile_id for p in s.profiles(0, "TxDefaultProfile")] == [5]
    assert s.composite(1, T0).limit_a == 12


def test_it_replaces_the_same_profile_id():
    s = store()
    install(s, 0, profile(1, "TxDefaultProfile", 16, stack=0))
    install(s, 0, profile(1, "TxDefaultProfile", 10, stack=3))
    assert len(s.installed) == 1
    assert s.composite(1, T0).limit_a == 10


def test_it_removes_tx_profiles_when_the_transaction_ends():
    s = store()
    install(s, 0, profile(1, "TxDefaultProfile", 10))
    install(s, 1, profile(2, "TxProfile", 25), tx=7)
    assert s.end_transaction(1) == 1
    assert s.composite(1, T0, transaction_id=7).limit_a == 10


def test_it_follows_the_periods_of_a_relative_schedule_from_the_transaction_start():
    s = store()
    install(s, 1, profile(2, "TxProfile", [(0, 8), (60, 16), (120, 32)]), tx=7)
    start = at(1000)
    assert s.composite(1, at(1030), transaction_id=7, transaction_start=start).limit_a == 8
    assert s.composite(1, at(1090), transaction_id=7, transaction_start=start).limit_a == 16
    assert s.composite(1, at(5000), transaction_id=7, transaction_start=start).limit_a == 32


def test_it_starts_an_absolute_schedule_at_its_start_schedule():
    s = store()
    install(s, 0, profile(1, "TxDefaultProfile", 32))
    install(s, 0, profile(2, "TxDefaultProfile", [(0, 10), (30, 20)], stack=1, kind="Absolute",
                          startSchedule=at(100).isoformat(), duration=60))
    assert s.composite(1, at(50)).limit_a == 32
    assert s.composite(1, at(110)).limit_a == 10
    assert s.composite(1, at(140)).limit_a == 20
    assert s.composite(1, at(170)).limit_a == 32


def test_it_repeats_a_daily_recurring_schedule():
    s = store()
    evening = [(0, 32), (8 * 3600, 6), (20 * 3600, 32)]  # §3.13.7: reduced from 08:00 to 20:00
    install(s, 0, profile(1, "TxDefaultProfile", evening, kind="Recurring", recurrencyKind="Daily",
                          startSchedule="2026-01-01T00:00:00Z", duration=86400))
    assert s.composite(1, dt.datetime(2026, 1, 5, 7, 59, tzinfo=dt.UTC)).limit_a == 32
    assert s.composite(1, dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)).limit_a == 6
    assert s.composite(1, dt.datetime(2026, 1, 9, 21, 0, tzinfo=dt.UTC)).limit_a == 32


def test_it_converts_watts_at_the_phases_in_use():
    s = store()
    install(s, 0, profile(1, "TxDefaultProfile", 6900, unit="W", phases=3))
    assert s.composite(1, T0).limit_a == pytest.approx(10.0)
    # A single-phase car behind a three-phase W profile draws it all on one phase.
    assert s.composite(1, T0, phases_in_use=1).limit_a == pytest.approx(30.0)


def test_it_assumes_three_phases_when_number_phases_is_absent():
    s = store()
    install(s, 0, profile(1, "TxDefaultProfile", 11040, unit="W"))
    assert s.composite(1, T0).limit_a == pytest.approx(16.0)


def test_it_says_until_when_a_composite_holds():
    s = store()
    install(s, 1, profile(2, "TxProfile", [(0, 8), (60, 16)]), tx=7)
    composite = s.composite(1, at(10), transaction_id=7, transaction_start=T0)
    assert composite.valid_until == at(60)


@pytest.mark.parametrize(
    ("connector", "p", "tx", "limits", "reason"),
    [
        (1, profile(1, "TxProfile", 10), None, {}, "without a transaction"),
        (0, profile(1, "TxProfile", 10), 7, {}, "connector 0"),
        (1, profile(1, "TxProfile", 10, transactionId=8), 7, {}, "transaction 8"),
        (1, profile(1, "ChargePointMaxProfile", 10), None, {}, "only on connector 0"),
        (0, profile(1, "TxDefaultProfile", 6900, unit="W"), None, {"allowed_units": ("A",)}, "not allowed"),
        (0, profile(1, "TxDefaultProfile", 10), None, {"allowed_units": ("W",)}, "not allowed"),
        (0, profile(1, "TxDefaultProfile", 10, stack=3), None, {"max_stack_level": 2}, "stackLevel 3"),
        (0, profile(1, "TxDefaultProfile", [(0, 1), (10, 2), (20, 3)]), None, {"max_periods": 2}, "MaxPeriods"),
        (0, profile(1, "TxDefaultProfile", [(5, 10)]), None, {}, "first startPeriod"),
        (0, profile(1, "TxDefaultProfile", 10, kind="Absolute"), None, {}, "without startSchedule"),
        (3, profile(1, "TxDefaultProfile", 10), None, {}, "no connector 3"),
    ],
)
def test_it_rejects_what_a_strict_charger_rejects(connector, p, tx, limits, reason):
    s = store(**limits)
    status, why = s.install(connector, p, transaction_id=tx, now=T0)
    assert status == "Rejected"
    assert reason in (why or "")
    assert not s.installed


def test_it_accepts_only_stack_levels_up_to_the_configured_maximum():
    s = store(max_stack_level=0)
    assert install(s, 0, profile(1, "TxDefaultProfile", 10, stack=0)) == "Accepted"
    assert install(s, 0, profile(2, "TxDefaultProfile", 10, stack=1)) == "Rejected"


def test_it_clears_profiles_by_id_or_by_criteria():
    s = store(connectors=2)
    install(s, 0, profile(1, "TxDefaultProfile", 16))
    install(s, 1, profile(2, "TxDefaultProfile", 8))
    install(s, 2, profile(3, "TxDefaultProfile", 8))
    assert s.clear(profile_id=2) == 1
    assert s.clear(purpose="TxDefaultProfile", connector_id=2) == 1
    assert [p.profile.profile_id for p in s.installed] == [1]


def test_it_shares_charge_point_max_between_charging_connectors():
    assert share_charge_point_max({1: 32.0, 2: 32.0}, 32.0) == {1: 16.0, 2: 16.0}
    # A connector limited below its share leaves the rest to the other.
    assert share_charge_point_max({1: 6.0, 2: 32.0}, 32.0) == {1: 6.0, 2: 26.0}
    assert share_charge_point_max({1: 20.0}, 32.0) == {1: 20.0}


def test_it_reads_the_snake_case_payload_the_ocpp_library_hands_over():
    payload = {"charging_profile_id": 9, "stack_level": 1, "charging_profile_purpose": "TxDefaultProfile",
               "charging_profile_kind": "Relative",
               "charging_schedule": {"charging_rate_unit": "A",
                                     "charging_schedule_period": [{"start_period": 0, "limit": 12.5}]}}
    parsed = ChargingProfile.from_ocpp(payload)
    assert (parsed.profile_id, parsed.stack_level, parsed.periods[0].limit) == (9, 1, 12.5)


def test_the_simulator_package_names_load_on_first_use_and_each_is_exported():
    """The package's names are imported lazily (a web process must not load the simulator): every
    exported name has a home module and resolves to that module's object."""
    import importlib

    import simulator

    assert set(simulator.__all__) == set(simulator._HOME)
    for name, home in simulator._HOME.items():
        assert getattr(simulator, name) is getattr(importlib.import_module(f"simulator.{home}"), name)
