"""The meter poll task against real pymodbus servers: readings reach the zones, failures never do."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from loadmgmt.capacity import zone_capacity
from loadmgmt.inputs import zone_config, zone_measurement
from loadmgmt.models import SiteSettings, Zone
from meters import selectors, services, tasks
from meters.models import Meter
from meters.registers import get_register_map
from tests.meters_fakes import FakeMeter, typical_values
from tests.meters_lab import at, dynamic_zone, make_meter

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

IEM = get_register_map("iem3x5x")
PM5300 = get_register_map("pm5300")
POWERTAG = get_register_map("powertag")
NAN = [0xFFC0, 0x0000]


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> list[dt.datetime]:
    """The task reads the project clock; tests move it by assigning ``frozen[0]``."""
    now = [at(0)]
    monkeypatch.setattr("evce.clock.now", lambda: now[0])
    return now


def poll(seconds: float) -> services.PollReport:
    return services.meters_poll_due(now=at(seconds))


def capacity_of(zone: Zone, seconds: float, ev_a: tuple[float, float, float] = (0.0, 0.0, 0.0)):
    """The zone's capacity computed by load management from what the poller stored."""
    zone.refresh_from_db()
    config, measurement = zone_config(zone), zone_measurement(zone)
    now = at(seconds)
    return zone_capacity(config, measurement, ev_a, now=now.timestamp(), local=now,
                         max_age_s=SiteSettings.load().measurement_max_age_s)


def test_it_stores_readings_of_iem_pm5300_and_powertags_and_follows_changes(lab, frozen):
    zone = dynamic_zone()
    iem = lab.meter(IEM, typical_values(IEM) | {"current_l1_a": 40.0, "power_w": 25_000.0})
    pm = lab.meter(PM5300, typical_values(PM5300) | {"power_w": 7_500.0})
    tags = [FakeMeter(POWERTAG, unit_id=uid, values=typical_values(POWERTAG)) for uid in (150, 151)]
    lab.serve(tags)
    make_meter(lab, iem, "Incomer", role="zone_total", zone=zone)
    make_meter(lab, pm, "Roof PV", role="pv", zone=zone)
    for tag in tags:
        make_meter(lab, tag, f"EVSE {tag.unit_id}", role="ev_submeter", zone=zone)

    report = tasks.poll_due_meters()

    assert report is not None and report["failed"] == {} and len(report["ok"]) == 4
    zone.refresh_from_db()
    assert (zone.measured_current_l1_a, zone.measured_current_l2_a, zone.measured_current_l3_a) == (40.0, 30.25, 29.75)
    assert zone.measured_power_kw == pytest.approx(25.0)
    assert zone.pv_power_kw == pytest.approx(7.5)
    assert zone.measured_at == at(0)
    assert selectors.ev_submeter_currents([zone.pk], now=at(0)) == {zone.pk: (63.0, 60.5, 59.5)}
    incomer = Meter.objects.get(name="Incomer")
    assert incomer.last_values["energy_import_wh"] == 123_456_789.0
    assert (incomer.last_reading_at, incomer.stale, incomer.consecutive_failures) == (at(0), False, 0)

    iem.set_values({"current_l1_a": 12.5, "power_w": 9_000.0})
    tags[0].set_value("current_l2_a", 6.0)
    frozen[0] = at(5)
    tasks.poll_due_meters()

    zone.refresh_from_db()
    assert (zone.measured_current_l1_a, zone.measured_power_kw, zone.measured_at) == (12.5, 9.0, at(5))
    assert selectors.ev_submeter_currents([zone.pk], now=at(5))[zone.pk] == (63.0, 36.25, 59.5)


def test_only_meters_whose_period_elapsed_are_polled(lab):
    fake = lab.meter(IEM)
    make_meter(lab, fake, "Incomer", poll_period_s=5)
    poll(0)
    requests = fake.requests
    assert poll(2).polled == 0
    assert fake.requests == requests
    assert poll(4.6).polled == 1  # a beat tick a little early still polls a due meter
    assert fake.requests > requests


def test_a_meter_that_stops_answering_goes_stale_and_its_zone_falls_back(lab, caplog):
    zone = dynamic_zone(max_current_a=100.0, fallback_current_a=16.0)
    fake = lab.meter(IEM, typical_values(IEM) | {"current_l1_a": 40.0, "current_l2_a": 30.0, "current_l3_a": 20.0})
    make_meter(lab, fake, "Incomer", role="zone_total", zone=zone)
    poll(0)
    assert capacity_of(zone, 10).zone.capacity_a == (60.0, 70.0, 80.0)

    fake.silent = True
    for seconds, failures in ((5, 1), (10, 2), (15, 3)):
        report = poll(seconds)
        meter = Meter.objects.get()
        assert "no answer within 0.3 s" in report.failed["Incomer"]
        assert (meter.consecutive_failures, meter.last_error_at, meter.stale) == (failures, at(seconds), False)
    assert "no answer within 0.3 s" in meter.last_error
    assert meter.last_reading_at == at(0)
    zone.refresh_from_db()
    assert zone.measured_at == at(0)  # never refreshed by a failed poll

    with caplog.at_level(logging.WARNING, logger="meters.services"):
        assert poll(61).turned_stale == ["Incomer"]
        assert poll(66).turned_stale == []
    assert len([r for r in caplog.records if "is stale" in r.getMessage()]) == 1  # logged once
    assert Meter.objects.get().stale is True

    capacity = capacity_of(zone, 66)
    assert capacity.fallback is True
    assert capacity.zone.capacity_a == (16.0, 16.0, 16.0)

    fake.silent = False
    poll(71)
    meter = Meter.objects.get()
    assert (meter.stale, meter.consecutive_failures, meter.last_reading_at) == (False, 0, at(71))
    assert capacity_of(zone, 71).fallback is False


def test_a_modbus_exception_is_recorded(lab):
    fake = lab.meter(IEM)
    fake.exception_code = 4
    make_meter(lab, fake, "Incomer")
    poll(0)
    meter = Meter.objects.get()
    assert "exception 4 (ServerDeviceFailure)" in meter.last_error
    assert (meter.consecutive_failures, meter.last_reading_at, meter.last_values) == (1, None, {})


def test_a_dead_powertag_behind_its_gateway_is_recorded(lab):
    zone = dynamic_zone()
    tags = [FakeMeter(POWERTAG, unit_id=uid, values=typical_values(POWERTAG)) for uid in (150, 151)]
    lab.serve(tags)
    tags[0].exception_code = 11
    for tag in tags:
        make_meter(lab, tag, f"EVSE {tag.unit_id}", role="ev_submeter", zone=zone)
    report = poll(0)
    assert "GatewayTargetDeviceFailedToRespond" in report.failed["EVSE 150"]
    assert report.ok == ["EVSE 151"]
    # The dead tag counts 0 A: EV load under-counted is the conservative side.
    assert selectors.ev_submeter_currents([zone.pk], now=at(0)) == {zone.pk: (31.5, 30.25, 29.75)}


def test_nan_is_rejected_and_never_stored(lab):
    zone = dynamic_zone()
    fake = lab.meter(IEM)
    fake.set_words("current_l2_a", NAN)
    make_meter(lab, fake, "Incomer", role="zone_total", zone=zone)

    report = poll(0)

    assert "current_l2_a" in report.failed["Incomer"] and "NaN" in report.failed["Incomer"]
    meter = Meter.objects.get()
    assert (meter.last_values, meter.last_reading_at, meter.consecutive_failures) == ({}, None, 1)
    zone.refresh_from_db()
    assert (zone.measured_at, zone.measured_current_l2_a) == (None, None)
    assert capacity_of(zone, 0).fallback is True


def test_a_nan_in_a_quantity_the_role_does_not_need_is_left_out(lab):
    zone = dynamic_zone()
    fake = lab.meter(IEM)
    fake.set_words("frequency_hz", NAN)
    make_meter(lab, fake, "Incomer", role="zone_total", zone=zone)
    assert poll(0).ok == ["Incomer"]
    values = Meter.objects.get().last_values
    assert "frequency_hz" not in values and values["current_l2_a"] == 30.25


def test_garbage_everywhere_is_a_data_error(lab):
    fake = lab.meter(IEM)
    for quantity in IEM.quantities:  # float NaN and the int64 'not available' marker
        fake.set_words(quantity, NAN if IEM.register_for(quantity).data_type == "float32" else [0x8000, 0, 0, 0])
    make_meter(lab, fake, "Incomer")
    report = poll(0)
    assert "no usable value" in report.failed["Incomer"]
    assert Meter.objects.get().last_values == {}


def test_pv_never_refreshes_a_dead_consumption_meter_and_stale_pv_counts_zero(lab):
    zone = dynamic_zone(add_pv_production=True)
    incomer = lab.meter(IEM, typical_values(IEM) | {"current_l1_a": 40.0, "current_l2_a": 40.0, "current_l3_a": 40.0})
    pv = lab.meter(PM5300, typical_values(PM5300) | {"power_w": 6_900.0})
    make_meter(lab, incomer, "Incomer", role="zone_total", zone=zone)
    make_meter(lab, pv, "Roof PV", role="pv", zone=zone)
    poll(0)
    # 100 - 40 + PV per phase: the meter's phase currents, scaled down to its 6.9 kW (they claim more).
    currents = [typical_values(PM5300)[f"current_l{n}_a"] for n in (1, 2, 3)]
    scale = 6_900.0 / (sum(currents) * 230.0)
    assert capacity_of(zone, 0).zone.capacity_a == pytest.approx(tuple(60.0 + c * scale for c in currents))

    incomer.silent = True
    poll(30)
    zone.refresh_from_db()
    assert zone.measured_at == at(0)  # the live PV meter did not make old consumption look new
    assert capacity_of(zone, 61).fallback is True

    incomer.silent, pv.silent = False, True
    poll(65)
    poll(130)
    zone.refresh_from_db()
    assert (zone.measured_at, zone.pv_power_kw) == (at(130), 0.0)  # stale PV adds nothing
    assert capacity_of(zone, 130).zone.capacity_a == (60.0, 60.0, 60.0)


def test_polls_never_overlap(lab, frozen):
    fake = lab.meter(IEM)
    make_meter(lab, fake, "Incomer")
    held = tasks.poll_lock(30)
    assert held.acquire()
    try:
        assert tasks.poll_due_meters() is None
        assert Meter.objects.get().last_poll_at is None
    finally:
        held.release()
    assert tasks.poll_due_meters()["ok"] == ["Incomer"]


def test_ev_submeters_of_other_zones_and_disabled_ones_are_left_out(lab):
    zone, other = dynamic_zone(), dynamic_zone("Level 2")
    tag = FakeMeter(POWERTAG, unit_id=150, values=typical_values(POWERTAG))
    lab.serve([tag])
    make_meter(lab, tag, "EVSE 150", role="ev_submeter", zone=zone)
    make_meter(lab, tag, "EVSE 150 (spare)", role="ev_submeter", zone=other, enabled=False)
    poll(0)
    assert selectors.ev_submeter_currents([zone.pk, other.pk], now=at(10)) == {zone.pk: (31.5, 30.25, 29.75)}
    assert selectors.ev_submeter_currents([zone.pk], now=at(61)) == {zone.pk: (0.0, 0.0, 0.0)}  # stale: 0 A


def test_a_fault_while_recording_one_meter_costs_only_that_meter(lab, monkeypatch):
    for name in ("A", "B"):
        make_meter(lab, lab.meter(IEM), name)
    accumulate = services._accumulate

    def broken_for_a(meter, values, when):
        if meter.name == "A":
            raise RuntimeError("boom")
        return accumulate(meter, values, when)

    monkeypatch.setattr(services, "_accumulate", broken_for_a)
    report = poll(0)

    assert report.ok == ["B"] and "RuntimeError: boom" in report.failed["A"]
    a, b = Meter.objects.order_by("name")
    assert (a.last_reading_at, a.last_values, a.consecutive_failures) == (None, {}, 1)
    assert (b.last_reading_at, b.consecutive_failures) == (at(0), 0)
