"""Meter history: raw readings are folded into 1-minute averages, kept for the meter's retention."""

from __future__ import annotations

import datetime as dt

import pytest

from meters import services, tasks
from meters.models import Meter, MeterReading
from tests.meters_lab import T0, at

pytestmark = pytest.mark.django_db


@pytest.fixture
def meter() -> Meter:
    return Meter.objects.create(name="Incomer", host="192.0.2.10")


def record(meter: Meter, seconds: float, power_w: float, energy_wh: float = 1000.0) -> str:
    meter.refresh_from_db()
    return services.meter_record_reading(
        meter=meter, values={"power_w": power_w, "energy_import_wh": energy_wh}, at=at(seconds)
    )


def test_it_averages_each_minute_when_the_next_one_starts(meter):
    for seconds, power, energy in ((0, 1000.0, 10.0), (20, 2000.0, 12.0), (40, 6000.0, 15.0)):
        record(meter, seconds, power, energy)
    assert not MeterReading.objects.exists()  # the minute is still running

    record(meter, 65, 500.0, 16.0)

    row = MeterReading.objects.get()
    assert (row.start, row.samples, row.power_w, row.energy_import_wh) == (T0, 3, 3000.0, 15.0)
    assert row.current_l1_a is None  # not measured: empty, never 0
    meter.refresh_from_db()
    assert (meter.history_minute, meter.history_samples) == (at(60), 1)
    assert meter.last_values == {"power_w": 500.0, "energy_import_wh": 16.0}  # raw: the latest only


def test_the_flush_task_writes_minutes_of_meters_that_went_quiet(meter, monkeypatch):
    record(meter, 10, 1000.0)
    record(meter, 50, 3000.0)
    assert services.meters_flush_history(now=at(59)) == 0  # not over yet

    monkeypatch.setattr("evce.clock.now", lambda: at(60))
    assert tasks.flush_meter_history() == 1

    row = MeterReading.objects.get()
    assert (row.start, row.samples, row.power_w) == (T0, 2, 2000.0)
    meter.refresh_from_db()
    assert (meter.history_minute, meter.history_samples, meter.history_sums) == (None, 0, {})


def test_a_late_reading_is_merged_into_its_minute(meter):
    record(meter, 0, 1000.0)
    record(meter, 30, 2000.0)
    services.meters_flush_history(now=at(60))
    record(meter, 59, 6000.0)  # polled at :59, recorded after the flush
    services.meters_flush_history(now=at(120))

    row = MeterReading.objects.get()
    assert (row.samples, row.power_w) == (3, 3000.0)


def test_an_older_reading_never_replaces_a_newer_one(meter):
    record(meter, 10, 1000.0)
    record(meter, 5, 9999.0)
    meter.refresh_from_db()
    assert (meter.last_reading_at, meter.last_values["power_w"], meter.history_samples) == (at(10), 1000.0, 1)


def test_non_finite_values_never_reach_the_history(meter):
    meter.role = "monitor"
    services.meter_record_reading(meter=meter, values={"power_w": float("nan"), "frequency_hz": 50.0}, at=at(0))
    services.meters_flush_history(now=at(60))
    row = MeterReading.objects.get()
    assert (row.power_w, row.frequency_hz) == (None, 50.0)


def test_old_rows_are_pruned_per_meter_retention(meter, monkeypatch):
    short = Meter.objects.create(name="Tag", host="192.0.2.11", history_retention_days=1)
    for m in (meter, short):
        for days in (0, 2, 40):
            MeterReading.objects.create(meter=m, start=T0 - dt.timedelta(days=days), samples=1, power_w=1.0)
    monkeypatch.setattr("evce.clock.now", lambda: T0)

    assert tasks.prune_meter_history() == 3  # 40 days old (30-day meter); 2 and 40 days old (1-day meter)

    kept = sorted((r.meter.name, (T0 - r.start).days) for r in MeterReading.objects.all())
    assert kept == [("Incomer", 0), ("Incomer", 2), ("Tag", 0)]
