"""Zone capacity from configuration and measurements: time-of-use, dynamic, PV, stale fallback."""

from __future__ import annotations

import datetime as dt

import pytest

from loadmgmt.capacity import TimeOfUse, ZoneConfig, ZoneMeasurement, zone_capacity

MONDAY_18H = dt.datetime(2026, 11, 23, 18, 0, tzinfo=dt.UTC)  # a Monday
NOW = MONDAY_18H.timestamp()
NO_EV = (0.0, 0.0, 0.0)
PEAK = TimeOfUse(weekdays=frozenset(range(5)), start=dt.time(17), end=dt.time(20), limit_percent=50, label="peak")


def capacity(config, measurement=None, ev=NO_EV, local=MONDAY_18H, max_age_s=60):
    return zone_capacity(config, measurement, ev, now=NOW, local=local, max_age_s=max_age_s)


def test_a_static_zone_gives_its_limit_on_every_phase():
    result = capacity(ZoneConfig("1", "root", None, max_current_a=63, max_power_w=None))
    assert result.zone.capacity_a == (63, 63, 63)
    assert result.note == "static"


def test_time_of_use_reduces_the_limit_in_peak_hours_only():
    config = ZoneConfig("1", "root", None, max_current_a=100, max_power_w=40_000, time_of_use=(PEAK,))
    peak = capacity(config)
    assert peak.zone.capacity_a == (50, 50, 50)
    assert peak.zone.capacity_w == 20_000
    assert peak.note == "peak (time-of-use)"
    evening = capacity(config, local=MONDAY_18H.replace(hour=21))
    assert evening.zone.capacity_a == (100, 100, 100)
    saturday = capacity(config, local=MONDAY_18H + dt.timedelta(days=5))
    assert saturday.zone.capacity_a == (100, 100, 100)


def test_a_night_rule_crosses_midnight():
    night = TimeOfUse(weekdays=frozenset({0}), start=dt.time(22), end=dt.time(6), limit_current_a=20)
    config = ZoneConfig("1", "z", None, max_current_a=63, max_power_w=None, time_of_use=(night,))
    assert capacity(config, local=MONDAY_18H.replace(hour=23)).zone.capacity_a == (20, 20, 20)
    tuesday_3am = MONDAY_18H + dt.timedelta(hours=9)
    assert capacity(config, local=tuesday_3am).zone.capacity_a == (20, 20, 20)
    monday_3am = MONDAY_18H.replace(hour=3)  # belongs to Sunday's night: no rule on Sunday
    assert capacity(config, local=monday_3am).zone.capacity_a == (63, 63, 63)


def test_a_dynamic_zone_serves_the_building_first():
    config = ZoneConfig("1", "z", None, max_current_a=100, max_power_w=None, dynamic=True, fallback_current_a=16)
    building = ZoneMeasurement(at=NOW - 5, current_a=(70.0, 50.0, 40.0))
    # 20 A of the measured current on each phase is EV load: it is not subtracted twice.
    result = capacity(config, building, ev=(20.0, 20.0, 20.0))
    assert result.zone.capacity_a == (50.0, 70.0, 80.0)
    assert not result.fallback


def test_a_stale_measurement_gives_the_fallback_never_unlimited():
    config = ZoneConfig("1", "z", None, max_current_a=100, max_power_w=None, dynamic=True, fallback_current_a=16)
    stale = ZoneMeasurement(at=NOW - 600, current_a=(1.0, 1.0, 1.0))
    for measurement in (stale, None, ZoneMeasurement(at=NOW, current_a=(1.0, None, 1.0))):
        result = capacity(config, measurement)
        assert result.fallback
        assert result.zone.capacity_a == (16, 16, 16)
        assert "fallback 16 A" in result.note


def test_an_overloaded_building_leaves_zero_not_negative():
    config = ZoneConfig("1", "z", None, max_current_a=63, max_power_w=None, dynamic=True, fallback_current_a=10)
    result = capacity(config, ZoneMeasurement(at=NOW, current_a=(80.0, 80.0, 80.0)))
    assert result.zone.capacity_a == (0.0, 0.0, 0.0)


def test_pv_production_adds_capacity_when_configured_and_fresh():
    config = ZoneConfig("1", "z", None, max_current_a=None, max_power_w=30_000, dynamic=True,
                        fallback_current_a=10, add_pv=True)
    sunny = ZoneMeasurement(at=NOW, power_w=25_000, pv_w=9_000, pv_at=NOW)
    assert capacity(config, sunny).zone.capacity_w == pytest.approx(14_000)
    static = ZoneConfig("2", "z", None, max_current_a=32, max_power_w=None, add_pv=True)
    fresh_pv = ZoneMeasurement(at=None, pv_w=6_900, pv_at=NOW)
    assert capacity(static, fresh_pv).zone.capacity_a == pytest.approx((42, 42, 42))
    old_pv = ZoneMeasurement(at=None, pv_w=6_900, pv_at=NOW - 3600)
    assert capacity(static, old_pv).zone.capacity_a == (32, 32, 32)


def test_a_live_pv_meter_never_makes_a_dead_consumption_meter_look_fresh():
    config = ZoneConfig("1", "z", None, max_current_a=100, max_power_w=None, dynamic=True, fallback_current_a=16,
                        add_pv=True)
    dead_incomer = ZoneMeasurement(at=NOW - 600, current_a=(10.0, 10.0, 10.0), pv_w=6_900, pv_at=NOW)
    result = capacity(config, dead_incomer)
    assert result.fallback
    assert result.zone.capacity_a == (16, 16, 16)


@pytest.mark.django_db
def test_the_loop_subtracts_the_ev_load_an_ev_submeter_measures():
    from evce import clock
    from loadmgmt.inputs import gather
    from loadmgmt.models import Zone
    from loadmgmt.services import zone_record_measurement
    from meters.models import Meter

    now = clock.now()
    zone = Zone.objects.create(name="Car park", max_current_a=100, mode="dynamic", fallback_current_a=16)
    zone_record_measurement(zone=zone, at=now, current_a=(80.0, 80.0, 80.0))
    assert gather(now).zones[0].zone.capacity_a == (20.0, 20.0, 20.0)
    Meter.objects.create(name="EV feeder", meter_type="iem3x5x", host="127.0.0.1", port=502, role="ev_submeter",
                         zone=zone, last_reading_at=now,
                         last_values={"current_l1_a": 30.0, "current_l2_a": 30.0, "current_l3_a": 30.0})
    assert gather(now).zones[0].zone.capacity_a == (50.0, 50.0, 50.0)  # 100 - (80 - 30)


def test_a_single_phase_inverter_adds_to_its_own_phase_only():
    config = ZoneConfig("1", "z", None, max_current_a=32, max_power_w=None, add_pv=True, pv_phases=(1,))
    result = capacity(config, ZoneMeasurement(at=None, pv_w=6_900, pv_at=NOW))
    assert result.zone.capacity_a == pytest.approx((32, 62, 32))  # 6.9 kW / 230 V = 30 A on L2, not 10 A on each


def test_measured_pv_currents_per_phase_are_used_but_never_beyond_the_power():
    config = ZoneConfig("1", "z", None, max_current_a=32, max_power_w=None, add_pv=True)
    measured = ZoneMeasurement(at=None, pv_w=4_600, pv_at=NOW, pv_current_a=(20.0, 0.0, 0.0))
    assert capacity(config, measured).zone.capacity_a == pytest.approx((52, 32, 32))
    inflated = ZoneMeasurement(at=None, pv_w=2_300, pv_at=NOW, pv_current_a=(20.0, 0.0, 0.0))
    assert capacity(config, inflated).zone.capacity_a == pytest.approx((42, 32, 32))  # 2.3 kW is 10 A


def test_the_lowest_time_of_use_rule_gives_the_label():
    every_day = frozenset(range(7))
    rules = (TimeOfUse(weekdays=every_day, start=dt.time(0), end=dt.time(23, 59), limit_percent=80, label="day"),
             TimeOfUse(weekdays=every_day, start=dt.time(0), end=dt.time(23, 59), limit_current_a=20, label="peak"))
    config = ZoneConfig("1", "z", None, max_current_a=63, max_power_w=None, time_of_use=rules)
    result = capacity(config, None)
    assert result.zone.capacity_a == (20, 20, 20)
    assert result.note.startswith("peak")
