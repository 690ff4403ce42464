"""The watchdog's time rules on unsaved objects: no database, no clock but the one passed in."""

from __future__ import annotations

import datetime as dt

from api import watchdog
from api.models import Integration, ZoneControl
from loadmgmt.models import Zone

T0 = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def control(**fields) -> ZoneControl:
    integration = Integration(name="BMS", heartbeat_interval_s=60, failsafe_min_duration_s=600,
                              last_heartbeat_at=fields.pop("heartbeat", T0))
    values = {"current_a": 50.0, "written_at": T0, "valid_until": at(3600)}
    values.update(fields)
    return ZoneControl(zone=Zone(name="Z"), integration=integration, **values)


def status(c: ZoneControl, now: dt.datetime) -> watchdog.ControlStatus:
    return watchdog.zone_control_status(c, zone_max_current_a=100, zone_max_power_kw=None, zone_fallback_a=10,
                                        now=now)


def test_it_is_lost_just_after_twice_the_interval():
    c = control()
    assert watchdog.heartbeat_lost_at(c.integration, at(120)) is None
    assert watchdog.heartbeat_lost_at(c.integration, at(121)) == at(120)
    assert status(c, at(121)).source == "failsafe"


def test_a_recorded_failsafe_ends_only_with_a_newer_setpoint_and_after_the_minimum():
    c = control(failsafe_since=at(120), heartbeat=at(300))
    assert status(c, at(1000)).source == "failsafe"  # no newer setpoint
    c.written_at = at(300)
    assert status(c, at(719)).source == "failsafe"  # minimum ends at 720
    c.integration.last_heartbeat_at = at(700)
    assert status(c, at(720)).source == "setpoint"


def test_a_new_loss_during_an_unfinished_failsafe_keeps_the_earlier_start():
    c = control(failsafe_since=at(120), heartbeat=at(300))
    assert watchdog.failsafe_since(c, c.integration, at(1000)) == at(120)


def test_a_heartbeat_records_the_loss_it_ends_on_every_zone_not_already_in_failsafe():
    fresh, already = control(pk=1), control(pk=2, failsafe_since=at(-5000), written_at=at(-6000))
    fresh.integration = already.integration
    marks = watchdog.failsafe_marks_on_heartbeat([fresh, already], fresh.integration, at(500))
    assert marks == {1: at(120)}
    assert watchdog.failsafe_marks_on_heartbeat([fresh], fresh.integration, at(60)) == {}


def test_the_failsafe_defaults_to_the_zone_fallback_and_is_capped_by_the_zone():
    c = control()
    assert status(c, at(500)).current_a == 10
    c.integration.failsafe_current_a = 250
    assert status(c, at(500)).current_a == 100


def test_an_expired_setpoint_reads_back_as_expired_from_its_end():
    c = control(valid_until=at(60))
    expired = status(c, at(60))
    assert (expired.source, expired.since, expired.current_a) == ("expired", at(60), None)
    assert status(None, at(0)).source == "configured"
