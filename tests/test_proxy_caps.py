"""Backend profiles as caps, without I/O: schedules (OCPP 1.6 §3.13, §7.13), units, stack levels;
the reconnect back-off; command policies by role; URL validation."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError

from proxy.caps import StoredProfile, composite_periods, connector_limit_a, limit_at, to_amps
from proxy.link import backoff_s
from proxy.models import Policy, Role, UpstreamBackend, validate_ws_url

T0 = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC)


def profile(limit: float = 16, *, kind: str = "Absolute", start: dt.datetime | None = T0, unit: str = "A",
            periods: list[tuple[int, float]] | None = None, duration: int | None = None, **extra) -> dict:
    schedule: dict = {"chargingRateUnit": unit,
                      "chargingSchedulePeriod": [{"startPeriod": s, "limit": v} for s, v in periods or [(0, limit)]]}
    if start is not None:
        schedule["startSchedule"] = start.isoformat()
    if duration is not None:
        schedule["duration"] = duration
    return {"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": kind, "chargingSchedule": schedule, **extra}


def stored(purpose: str, limit: float, *, connector: int = 0, stack: int = 0, tx: int | None = None,
           **options) -> StoredProfile:
    return StoredProfile(connector_id=connector, purpose=purpose, stack_level=stack, transaction_id=tx,
                         profile=profile(limit, **options))


def test_it_follows_an_absolute_schedule_period_by_period_until_its_duration():
    p = profile(periods=[(0, 16), (600, 8)], duration=1200)
    assert limit_at(p, T0 - dt.timedelta(seconds=1)) is None
    assert limit_at(p, T0) == (16.0, "A", 3)
    assert limit_at(p, T0 + dt.timedelta(seconds=600)) == (8.0, "A", 3)
    assert limit_at(p, T0 + dt.timedelta(seconds=1200)) is None


def test_it_honours_valid_from_and_valid_to():
    p = profile(validFrom=(T0 + dt.timedelta(hours=1)).isoformat(), validTo=(T0 + dt.timedelta(hours=2)).isoformat(),
                start=T0)
    assert limit_at(p, T0 + dt.timedelta(minutes=30)) is None
    assert limit_at(p, T0 + dt.timedelta(minutes=90)) == (16.0, "A", 3)
    assert limit_at(p, T0 + dt.timedelta(hours=2)) is None


def test_a_daily_recurring_profile_repeats_every_day():
    # 18:00-20:00 at 6 A, otherwise 32 A, every day from the start day at midnight.
    midnight = T0.replace(hour=0)
    p = profile(kind="Recurring", recurrencyKind="Daily", start=midnight,
                periods=[(0, 32), (18 * 3600, 6), (20 * 3600, 32)])
    for days in (0, 1, 30):
        day = midnight + dt.timedelta(days=days)
        assert limit_at(p, day + dt.timedelta(hours=19))[0] == 6.0
        assert limit_at(p, day + dt.timedelta(hours=21))[0] == 32.0


def test_a_relative_profile_starts_with_the_transaction():
    p = profile(kind="Relative", start=None, periods=[(0, 10), (3600, 20)])
    assert limit_at(p, T0 + dt.timedelta(minutes=30), tx_start=T0)[0] == 10.0
    assert limit_at(p, T0 + dt.timedelta(minutes=90), tx_start=T0)[0] == 20.0


def test_watts_become_amps_over_the_chargers_phases_at_230_v():
    assert to_amps(11040, "W", 3) == pytest.approx(16.0)
    assert to_amps(3680, "W", 1) == pytest.approx(16.0)
    assert to_amps(16, "A", 3) == 16


def test_the_highest_stack_level_wins_and_tx_profiles_count_only_for_their_transaction():
    profiles = [stored("TxDefaultProfile", 20, stack=0), stored("TxDefaultProfile", 12, stack=1),
                stored("TxProfile", 25, connector=1, tx=7)]
    assert connector_limit_a(profiles, 1, T0, phases=3) == 12.0  # no transaction: the default
    assert connector_limit_a(profiles, 1, T0, phases=3, transaction_id=7) == 25.0  # its TxProfile overrides
    assert connector_limit_a(profiles, 1, T0, phases=3, transaction_id=8) == 12.0  # another transaction's
    with_max = [*profiles, stored("ChargePointMaxProfile", 10)]
    assert connector_limit_a(with_max, 1, T0, phases=3, transaction_id=7) == 10.0
    assert connector_limit_a([], 1, T0, phases=3) is None


def test_a_connector_default_replaces_the_charger_wide_default_for_that_connector():
    profiles = [stored("TxDefaultProfile", 10, connector=0), stored("TxDefaultProfile", 16, connector=2)]
    assert connector_limit_a(profiles, 1, T0, phases=3) == 10.0
    assert connector_limit_a(profiles, 2, T0, phases=3) == 16.0


def test_an_expired_schedule_falls_back_to_the_lower_stack_level():
    profiles = [stored("TxDefaultProfile", 20, stack=0), stored("TxDefaultProfile", 8, stack=3, duration=60)]
    assert connector_limit_a(profiles, 1, T0, phases=3) == 8.0
    assert connector_limit_a(profiles, 1, T0 + dt.timedelta(seconds=61), phases=3) == 20.0


def test_the_composite_is_the_lower_of_local_and_backend_over_time():
    profiles = [stored("TxDefaultProfile", 0, periods=[(0, 20), (600, 8)])]
    assert composite_periods([profiles], 1, T0, 1200, phases=3, local_a=16) == [(0, 16.0), (600, 8.0)]
    assert composite_periods([], 1, T0, 1200, phases=3, local_a=16) == [(0, 16.0)]


def test_the_reconnect_back_off_doubles_from_1_s_to_300_s_with_50_percent_jitter():
    assert [backoff_s(n, rng=lambda: 0.5) for n in range(10)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert backoff_s(0, rng=lambda: 0.0) == 0.5 and backoff_s(0, rng=lambda: 0.999) == pytest.approx(1.499)
    assert backoff_s(50, rng=lambda: 0.999) == pytest.approx(449.7)


def test_a_mirror_may_only_read_by_default_and_policies_override_the_role():
    backend = UpstreamBackend(name="x", url="ws://cpo.example/ocpp")
    assert backend.policy_for("GetConfiguration", Role.MIRROR) == Policy.FORWARD
    assert backend.policy_for("RemoteStartTransaction", Role.MIRROR) == Policy.REFUSE
    assert backend.policy_for("RemoteStartTransaction", Role.PRIMARY) == Policy.FORWARD
    backend.policy_reset = Policy.LOCAL
    assert backend.policy_for("Reset", Role.PRIMARY) == Policy.LOCAL
    assert backend.policy_for("Heartbeat", Role.PRIMARY) == Policy.REFUSE


@pytest.mark.parametrize("url", ["ws://cpo.example/ocpp", "wss://cpo.example:8443/ocpp/", "ws://10.0.0.2/"])
def test_ws_and_wss_urls_are_valid(url):
    validate_ws_url(url)


@pytest.mark.parametrize("url", ["http://cpo.example/ocpp", "ws:///ocpp", "ws://cpo.example/?a=1", "cpo", "ws://h:x/",
                                 "ws://cpo example/ocpp", "wss://cpo.example/ocpp\n"])
def test_other_urls_are_refused(url):
    with pytest.raises(ValidationError):
        validate_ws_url(url)
