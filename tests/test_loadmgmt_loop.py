"""Loop ticks run in-process against real chargers: shedding, dynamic zones, stale data, audit."""

from __future__ import annotations

import datetime as dt

import pytest
from ocpp.v16 import call

from badges.models import Badge
from chargers.models import Charger, RegistrationStatus
from evce import clock
from loadmgmt.control import run_tick
from loadmgmt.inputs import gather
from loadmgmt.models import Setpoint, SiteSettings, Zone, ZoneMode
from loadmgmt.services import zone_record_measurement
from tests.conftest import wait_until
from tests.loop_helpers import settle
from tests.ocpp_sim import utc_iso


@pytest.fixture
def make_site(ocpp_url, charger_factory):
    def make(zone: Zone, count: int, prefix: str):
        settings = SiteSettings.load()
        settings.min_on_s = settings.min_off_s = 0
        settings.save()
        sims = []
        for n in range(count):
            Charger.objects.create(charge_point_id=f"{prefix}-{n}", registration_status=RegistrationStatus.ACCEPTED,
                                   zone=zone, rated_max_current_a=32)
        for n in range(count):
            sim = charger_factory(ocpp_url, f"{prefix}-{n}").connect()
            sim.boot()
            Badge.objects.create(id_tag=f"{prefix}-D{n}")
            sim.call(call.StartTransaction(connector_id=1, id_tag=f"{prefix}-D{n}", meter_start=n * 1000,
                                           timestamp=utc_iso(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=n))))
            sims.append(sim)
        return sims

    return make


def tx_limits(sims) -> list[float | None]:
    return [sim.last_tx_limit() for sim in sims]


def test_when_minimums_do_not_fit_sessions_are_paused_with_0_a(make_site):
    zone = Zone.objects.create(name="Small feeder", max_current_a=20)
    sims = make_site(zone, 4, "CP-SHED")
    report = settle()[0]
    assert report.problems == []
    limits = tx_limits(sims)
    assert sorted(limits) == [0.0, 6.6, 6.6, 6.6]  # 3 x 6 A fit in 20 A, 4 do not
    assert report.paused == 1
    paused = Setpoint.objects.filter(paused=True)
    assert {s.binding for s in paused} == {"shed"}


def test_a_dynamic_zone_follows_the_building_load_and_falls_back_when_data_is_stale(make_site):
    zone = Zone.objects.create(name="Building", max_current_a=100, mode=ZoneMode.DYNAMIC, fallback_current_a=20)
    sims = make_site(zone, 2, "CP-DYN")
    zone_record_measurement(zone=zone, at=clock.now(), current_a=(40.0, 40.0, 40.0))
    settle()
    assert tx_limits(sims) == [30.0, 30.0]
    zone_record_measurement(zone=zone, at=clock.now(), current_a=(80.0, 80.0, 80.0))
    settle()
    assert tx_limits(sims) == [10.0, 10.0]
    later = clock.now() + dt.timedelta(minutes=10)  # the meter went silent: its reading is now stale
    settle(later)
    assert tx_limits(sims) == [10.0, 10.0]
    gathered = gather(later)
    assert gathered.zones[0].fallback
    assert "fallback 20 A" in gathered.zones[0].note


def test_measured_draw_below_the_offer_is_given_to_others(make_site):
    zone = Zone.objects.create(name="Park", max_current_a=40)
    sims = make_site(zone, 2, "CP-DRAW")
    SiteSettings.objects.filter(pk=1).update(car_response_s=0)
    settle()
    assert tx_limits(sims) == [20.0, 20.0]
    charger = Charger.objects.get(charge_point_id="CP-DRAW-0")
    tx_id = charger.transactions.get().pk
    sims[0].call(call.MeterValues(connector_id=1, transaction_id=tx_id, meter_value=[{
        "timestamp": utc_iso(), "sampledValue": [
            {"value": "8.0", "measurand": "Current.Import", "phase": p, "unit": "A"} for p in ("L1", "L2", "L3")]}]))
    settle()
    assert tx_limits(sims) == [10.0, 30.0]  # 8 A drawn + 2 A margin; the rest goes to the other car
    assert Setpoint.objects.filter(charger=charger).latest("id").binding == "measured draw"


def test_two_ticks_never_overlap(transactional_db):
    from loadmgmt import tasks

    held = tasks._redis().lock(tasks.LOCK_KEY, timeout=30, blocking=False)
    assert held.acquire()
    try:
        assert tasks.control_tick(force=True) is None  # skipped: a tick is running
    finally:
        held.release()
    assert tasks.control_tick(force=True)["sessions"] == 0


def test_the_loop_runs_at_the_site_period(transactional_db):
    from loadmgmt import tasks

    tasks._redis().delete(tasks.GATE_KEY)
    SiteSettings.objects.update_or_create(pk=1, defaults={"loop_period_s": 60})
    assert tasks.control_tick() is not None
    assert tasks.control_tick() is None  # beat fires every second; the period has not elapsed


def test_an_offline_chargers_session_keeps_its_last_limit_reserved(make_site):
    zone = Zone.objects.create(name="Garage", max_current_a=44)
    sims = make_site(zone, 3, "CP-LOST")
    settle()
    assert tx_limits(sims) == [14.6, 14.6, 14.6]
    sims[2].close()  # its link is gone, but the car may go on charging at 14.6 A
    from tests.conftest import wait_until

    wait_until(lambda: not Charger.objects.get(charge_point_id="CP-LOST-2").connected)
    report = settle()[-1]
    assert report.sessions == 2 and report.reserved == 1
    # (44 - 14.6) / 2 = 14.7: within the hysteresis of what they have, so nothing is sent, and
    # above all not 22 A each as if the lost charger drew nothing.
    assert tx_limits(sims[:2]) == [14.6, 14.6]
    assert "held by sessions the loop cannot lower" in gather(clock.now()).zones[0].note


def test_a_charger_reporting_power_only_gets_its_limit_in_watts(ocpp_url, charger_factory):
    from chargers.models import ConfigurationKey
    from tests.conftest import wait_until

    zone = Zone.objects.create(name="Wall", max_current_a=16)
    Charger.objects.create(charge_point_id="CP-WATT", registration_status=RegistrationStatus.ACCEPTED, zone=zone,
                           rated_max_current_a=32, phases=1)
    Badge.objects.create(id_tag="W-DRIVER")
    sim = charger_factory(ocpp_url, "CP-WATT").connect()
    sim.cp.config["ChargingScheduleAllowedChargingRateUnit"] = "Power"
    sim.boot()
    wait_until(lambda: ConfigurationKey.objects.filter(key="ChargingScheduleAllowedChargingRateUnit").exists())
    sim.call(call.StartTransaction(connector_id=1, id_tag="W-DRIVER", meter_start=0, timestamp=utc_iso()))
    settle()
    profile = [p for a, p in sim.cp.received if a == "SetChargingProfile"][-1]["cs_charging_profiles"]
    assert profile["charging_schedule"]["charging_rate_unit"] == "W"
    assert float(profile["charging_schedule"]["charging_schedule_period"][0]["limit"]) == 3680.0  # 16 A x 230 V


def test_a_bems_budget_lowers_the_zone_and_a_lost_heartbeat_brings_the_failsafe(make_site):
    import datetime as dt

    from api.services import zone_setpoint_write
    from tests.api_support import make_integration

    zone = Zone.objects.create(name="Building", max_current_a=63, fallback_current_a=8)
    sims = make_site(zone, 2, "CP-BEMS")
    settle()
    assert tx_limits(sims) == [31.5, 31.5]
    integration, _token = make_integration(heartbeat_interval_s=60)
    now = clock.now()
    zone_setpoint_write(integration=integration, zone=zone, current_a=20.0, power_kw=None,
                        valid_until=now + dt.timedelta(hours=1), now=now)
    settle(now)
    assert tx_limits(sims) == [10.0, 10.0]
    assert "setpoint" in gather(now).zones[0].note
    silent_bems = now + dt.timedelta(seconds=121)  # no heartbeat for 2 x 60 s: failsafe (the zone's 8 A)
    settle(silent_bems)
    assert sorted(tx_limits(sims)) == [0.0, 8.0]  # 8 A fit one car at 6 A or more; the other waits paused
    assert "failsafe" in gather(silent_bems).zones[0].note


def test_a_worker_killed_mid_tick_blocks_the_loop_for_seconds_not_minutes(transactional_db, servers):
    import os
    import signal
    import subprocess
    import sys
    import time

    from loadmgmt import tasks

    holder = subprocess.Popen(
        [sys.executable, "-c", "import django; django.setup(); from loadmgmt import tasks; "
         "lease = tasks.Lease(tasks._redis()); assert lease.acquire(); print('held', flush=True); "
         "import time; time.sleep(600)"],
        env={**servers.env, **os.environ, "DJANGO_SETTINGS_MODULE": "evce.settings"}, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        time.sleep(tasks.LEASE_S * 1.5)
        assert tasks.control_tick(force=True) is None  # alive: its lease is renewed, no second tick
        holder.send_signal(signal.SIGKILL)  # killed in the middle of its tick
        holder.wait(5)
        killed_at = time.monotonic()
        wait_until(lambda: tasks.control_tick(force=True) is not None, timeout_s=tasks.LEASE_S + 2, interval_s=0.2)
        assert time.monotonic() - killed_at <= tasks.LEASE_S + 1
    finally:
        holder.kill()


def test_a_charger_with_invalid_stored_values_is_isolated_and_the_site_runs_on(make_site):
    zone = Zone.objects.create(name="Park", max_current_a=32)
    sims = make_site(zone, 2, "CP-ISO")
    settle()
    assert tx_limits(sims) == [16.0, 16.0]
    # Stored bypassing the admin's validators (a bad import, a manual SQL edit):
    Charger.objects.filter(charge_point_id="CP-ISO-0").update(min_current_a=0)
    report = settle()[0]
    assert any("CP-ISO-0 isolated" in problem for problem in report.problems)
    assert report.reserved == 1 and report.sessions == 1
    assert tx_limits(sims) == [16.0, 16.0]  # its 16 A stay reserved; the other keeps what fits


def test_a_session_whose_start_was_refused_is_never_allocated(ocpp_url, charger_factory):
    zone = Zone.objects.create(name="Gate", max_current_a=32)
    Charger.objects.create(charge_point_id="CP-REF", registration_status=RegistrationStatus.ACCEPTED, zone=zone)
    sim = charger_factory(ocpp_url, "CP-REF").connect()
    sim.boot()
    answer = sim.call(call.StartTransaction(connector_id=1, id_tag="UNKNOWN-TAG", meter_start=0, timestamp=utc_iso()))
    assert answer.id_tag_info["status"] == "Invalid"
    report = settle()[-1]
    assert report.sessions == 0 and report.reserved == 1
    assert sim.profile_limits("TxProfile") == []


def test_a_vip_badge_is_served_first_whatever_the_letter_case(ocpp_url, charger_factory):
    zone = Zone.objects.create(name="Exec", max_current_a=40)
    settings = SiteSettings.load()
    settings.allocation_mode, settings.min_on_s, settings.min_off_s = "priority", 0, 0
    settings.save()
    Badge.objects.create(id_tag="boss", vip=True)
    Badge.objects.create(id_tag="STAFF")
    sims = []
    for cp_id, tag in (("CP-VIP", "BOSS"), ("CP-STAFF", "STAFF")):
        Charger.objects.create(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED, zone=zone)
        sim = charger_factory(ocpp_url, cp_id).connect()
        sim.boot()
        answer = sim.call(call.StartTransaction(connector_id=1, id_tag=tag, meter_start=0, timestamp=utc_iso()))
        assert answer.id_tag_info["status"] == "Accepted"  # authorization ignores case…
        sims.append(sim)
    settle()
    assert tx_limits(sims) == [32.0, 8.0]  # …and so does the VIP lookup: "BOSS" is the VIP badge "boss"


def test_a_rebooting_charger_gets_its_default_at_once_and_never_a_raise(accepted_charger):
    from loadmgmt.control import boot_default_a
    from loadmgmt.models import LimitState

    assert boot_default_a(None) == 0.0  # nothing known: 0 A until the loop has planned everybody
    assert boot_default_a(LimitState(wanted_a=16.0, in_force_a=10.0)) == 10.0  # never raised at boot
    assert boot_default_a(LimitState(wanted_a=8.0, in_force_a=10.0)) == 8.0
    assert boot_default_a(LimitState(wanted_a=8.0, in_force_a=None)) == 0.0
    Zone.objects.create(name="Solo", max_current_a=16)
    sim = accepted_charger("CP-REBOOT")
    wait_until(lambda: sim.profile_limits("TxDefaultProfile") == [(0, 0.0)])
    settle()
    assert sim.profile_limits("TxDefaultProfile")[-1] == (0, 16.0)  # the loop raised it to its share
    sim.boot()  # rebooted: its default goes out again at once, at what it held
    wait_until(lambda: sim.profile_limits("TxDefaultProfile")[-1:] == [(0, 16.0)] and
               len(sim.profile_limits("TxDefaultProfile")) == 3)


def test_a_converged_site_stays_still(make_site):
    zone = Zone.objects.create(name="Quiet", max_current_a=50)
    sims = make_site(zone, 3, "CP-STILL")
    reports = settle()
    assert len(reports) <= 3  # converged in at most 2 ticks that send, then one that sends nothing
    before = [len(sim.profile_limits("TxProfile")) for sim in sims]
    for _ in range(5):
        assert run_tick(clock.now()).sent == 0
    assert [len(sim.profile_limits("TxProfile")) for sim in sims] == before


def test_a_charger_without_a_zone_shares_the_root_or_the_site_fallback(ocpp_url, charger_factory):
    for cp_id in ("CP-NOZONE-1", "CP-NOZONE-2"):
        Charger.objects.create(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED)
    Badge.objects.create(id_tag="NZ-1")
    Badge.objects.create(id_tag="NZ-2")
    sims = [charger_factory(ocpp_url, cp_id).connect() for cp_id in ("CP-NOZONE-1", "CP-NOZONE-2")]
    for n, sim in enumerate(sims, 1):
        sim.boot()
        sim.call(call.StartTransaction(connector_id=1, id_tag=f"NZ-{n}", meter_start=0, timestamp=utc_iso()))
    SiteSettings.objects.filter(pk=1).update(fallback_current_a=16, min_on_s=0, min_off_s=0)
    settle()
    assert tx_limits(sims) == [8.0, 8.0]  # no zones at all: both share the 16 A site fallback
    Zone.objects.create(name="Main", max_current_a=40)
    settle()
    assert tx_limits(sims) == [20.0, 20.0]  # one root zone: they belong to it
