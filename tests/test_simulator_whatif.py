"""What-if replay (``simulator.whatif``, ``simulate_fleet --what-if``): a day of arrivals on a simulated clock."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import CommandError, call_command

from chargers.models import Charger, RegistrationStatus
from loadmgmt.capacity import TimeOfUse, ZoneConfig
from loadmgmt.engine import Policy
from loadmgmt.models import Zone
from simulator.whatif import Arrival, WhatIfCharger, builtin_arrivals, parse_clock, read_arrivals, replay

DAY = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)  # a Monday
H = 3600.0
FAST = Policy(mode="equal", min_on_s=60, min_off_s=60, rotation_period_s=900)


def three_phase(n: int, zone: str = "z") -> list[WhatIfCharger]:
    return [WhatIfCharger(f"CP-{i}", zone) for i in range(1, n + 1)]


def test_it_serves_every_car_fully_when_the_site_has_room():
    zones = [ZoneConfig("z", "site", None, max_current_a=100, max_power_w=None)]
    cars = [Arrival(f"c{i}", 8 * H, 12 * H, 10.0) for i in range(3)]

    report = replay(zones, three_phase(3), cars, policy=FAST, day_start=DAY)

    assert [round(s.delivered_kwh, 2) for s in report.sessions] == [10.0, 10.0, 10.0]
    assert all(s.paused_s == 0 for s in report.sessions)
    # 32 A x 3 phases x 230 V = 22.08 kW: 10 kWh take 27.2 min, so the peak is the cars' own maximum.
    assert report.zones[0].peak_a == [96.0, 96.0, 96.0]


def test_a_zone_with_room_for_two_cars_makes_the_third_wait_and_rotates_it_in():
    zones = [ZoneConfig("z", "board", None, max_current_a=14, max_power_w=None)]  # 2 x 6 A fit, 3 do not
    cars = [Arrival(f"c{i}", 8 * H + i, 10 * H, 50.0) for i in range(3)]

    report = replay(zones, three_phase(3), cars, policy=FAST, day_start=DAY)
    data = report.as_dict()

    assert data["shed_sessions"] >= 1 and data["paused_minutes"] > 0
    # Never more than the zone: 14 A x 3 x 230 V for two hours at most.
    assert report.delivered_kwh <= 14 * 3 * 230 * 2 / 1000 + 1e-6
    assert report.zones[0].over_capacity_steps == 0
    assert max(report.zones[0].peak_a) <= 14
    # The rotation gives the shed car its turns: nobody is left with nothing.
    assert min(s.delivered_kwh for s in report.sessions) > 1.0


def test_a_car_without_a_free_charger_waits_and_gets_less():
    zones = [ZoneConfig("z", "site", None, max_current_a=100, max_power_w=None)]
    cars = [Arrival("early-1", 8 * H, 9 * H, 5.0), Arrival("early-2", 8 * H, 12 * H, 40.0),
            Arrival("late", 8 * H + 60, 9 * H + 600, 20.0)]

    report = replay(zones, three_phase(2), cars, policy=FAST, day_start=DAY)
    late = report.sessions[2]

    assert late.plugged_at_s == 9 * H  # the first car's charger, when it left
    assert late.waited_s == pytest.approx(H - 60, abs=10)
    assert 0 < late.delivered_kwh < 20.0


def test_peaks_never_exceed_capacity_per_phase_with_single_phase_chargers_and_a_peak_tariff():
    peak_rule = TimeOfUse(weekdays=frozenset(range(7)), start=dt.time(9), end=dt.time(11), limit_current_a=20)
    zones = [ZoneConfig("root", "site", None, max_current_a=40, max_power_w=25_000, time_of_use=(peak_rule,)),
             ZoneConfig("b1", "board 1", "root", max_current_a=25, max_power_w=None)]
    chargers = [WhatIfCharger(f"CP-{i}", "b1" if i % 2 else "root",
                              supply_phases=(0, 1, 2) if i % 3 == 0 else ((i % 3),)) for i in range(1, 9)]
    cars = builtin_arrivals("office", 12, seed=4)

    report = replay(zones, chargers, cars, policy=FAST, day_start=DAY, step_s=30)

    for zone in report.zones:
        assert zone.over_capacity_steps == 0, zone
        for phase in range(3):
            cap = zone.capacity_at_peak_a[phase]
            assert cap is None or zone.peak_a[phase] <= cap + 0.05
    root = next(z for z in report.zones if z.zone_id == "root")
    assert root.peak_w <= 25_000 + 1
    # Energy drawn at the root (phase by phase) is exactly what the sessions were given.
    assert root.energy_kwh == pytest.approx(report.delivered_kwh, rel=1e-9)
    assert report.delivered_kwh < report.requested_kwh  # the peak tariff costs energy


def test_vips_are_served_first_in_priority_mode():
    zones = [ZoneConfig("z", "site", None, max_current_a=40, max_power_w=None)]
    cars = [Arrival("vip", 8 * H, 10 * H, 40.0, vip=True)] + [Arrival(f"c{i}", 8 * H, 10 * H, 40.0) for i in range(3)]

    priority = {s.car_id: s for s in replay(zones, three_phase(4), cars, policy=Policy(mode="priority"),
                                             day_start=DAY).sessions}
    equal = {s.car_id: s for s in replay(zones, three_phase(4), cars, policy=Policy(mode="equal"),
                                          day_start=DAY).sessions}

    assert priority["vip"].delivered_kwh > max(priority[f"c{i}"].delivered_kwh for i in range(3)) + 5
    assert equal["vip"].delivered_kwh == pytest.approx(equal["c0"].delivered_kwh, rel=0.01)


def test_it_reads_arrivals_from_csv_and_names_the_bad_line():
    text = ("arrival,departure,energy_kwh,max_current_a,phases,vip,charger\n"
            "07:30,17:00,20,16,1,yes,CP-2\n8:00,9:00,5,,,,\n")
    first, second = read_arrivals(text)
    assert (first.arrival_s, first.departure_s, first.phases, first.vip, first.charger) == (
        7.5 * H, 17 * H, 1, True, "CP-2")
    assert (second.arrival_s, second.departure_s, second.max_current_a, second.phases) == (8 * H, 9 * H, 32.0, 3)
    with pytest.raises(ValueError, match="line 2: departure 07:00 is not after arrival 08:00"):
        read_arrivals("arrival,departure,energy_kwh\n08:00,07:00,10\n")
    with pytest.raises(ValueError, match="missing column"):
        read_arrivals("arrival,energy_kwh\n08:00,10\n")
    assert parse_clock("24:30") == 24.5 * H


@pytest.mark.django_db
def test_the_command_replays_against_the_site_in_the_database(tmp_path):
    root = Zone.objects.create(name="Connection point", max_current_a=14)
    for n in range(1, 4):
        Charger.objects.create(charge_point_id=f"WI-{n}", registration_status=RegistrationStatus.ACCEPTED, zone=root)
    csv_path = tmp_path / "day.csv"
    csv_path.write_text("arrival,departure,energy_kwh\n08:00,10:00,30\n08:00,10:00,30\n08:00,10:00,30\n")
    out, report_path = io.StringIO(), tmp_path / "out.json"

    call_command("simulate_fleet", what_if=str(csv_path), step=30, json=str(report_path), stdout=out)

    data = json.loads(report_path.read_text())
    assert "energy delivered (kWh)" in out.getvalue() and "Connection point" in out.getvalue()
    assert data["sessions"] == 3 and data["shed_sessions"] >= 1  # 2 x 6 A fit in 14 A, 3 do not
    assert data["zones"][0]["peak_a"][0] <= 14
    assert data["delivered_kwh"] == pytest.approx(sum(s["delivered_kwh"] for s in data["per_session"]), abs=0.01)
    assert data["delivered_kwh"] <= 14 * 3 * 230 * 2 / 1000 + 0.01


@pytest.mark.django_db
def test_the_command_refuses_a_site_without_chargers_and_an_unknown_profile(tmp_path):
    with pytest.raises(CommandError, match="no accepted charger"):
        call_command("simulate_fleet", what_if="office")
    Charger.objects.create(charge_point_id="WI-1", registration_status=RegistrationStatus.ACCEPTED)
    with pytest.raises(CommandError, match="neither a built-in profile"):
        call_command("simulate_fleet", what_if=str(tmp_path / "missing.csv"))
