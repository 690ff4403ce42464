"""Meter sample retention: raw samples kept METER_SAMPLES_RAW_DAYS, then folded per minute."""

from __future__ import annotations

import datetime as dt

import pytest

from chargers.models import Charger, RegistrationStatus
from transactions import services
from transactions.models import MeterSample, MeterSampleMinute, Transaction

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(days=10)


def _record(charger: Charger, tx: int | None, at: dt.datetime, amps: float, wh: int) -> None:
    services.meter_values_record(charger=charger, connector_id=1, transaction_id=tx, meter_values=[
        {"timestamp": at.isoformat(), "sampledValue": [
            {"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": str(amps), "measurand": "Current.Import", "phase": "L1", "unit": "A"}]}])


@pytest.fixture
def charger(db) -> Charger:
    return Charger.objects.create(charge_point_id="CP-RET", registration_status=RegistrationStatus.ACCEPTED)


def _session(charger: Charger, start: dt.datetime) -> int:
    return services.transaction_start(charger=charger, connector_id=1, id_tag="T", meter_start_wh=0,
                                      timestamp=start, reservation_id=None, now=start).transaction_id


def test_it_folds_old_samples_per_minute_and_keeps_recent_ones(charger, settings) -> None:
    settings.METER_SAMPLES_RAW_DAYS = 7
    tx = _session(charger, OLD)
    for second, amps in ((0, 10.0), (20, 14.0), (40, 12.0), (70, 16.0)):
        _record(charger, tx, OLD + dt.timedelta(seconds=second), amps, 100 + second)
    services.transaction_stop(charger=charger, transaction_id=tx, meter_stop_wh=500, timestamp=OLD +
                              dt.timedelta(minutes=5), reason="Local", id_tag=None, transaction_data=[], now=OLD)
    _record(charger, None, NOW - dt.timedelta(days=1), 8.0, 900)

    assert services.meter_samples_compact(now=NOW) == 8

    assert MeterSample.objects.count() == 2  # yesterday's, raw
    first = MeterSampleMinute.objects.get(measurand="Current.Import", minute=OLD)
    assert (first.samples, first.value_min, first.value_max, first.value_avg) == (3, 10.0, 14.0, 12.0)
    assert first.transaction_id == tx and first.phase == "L1" and first.unit == "A"
    assert MeterSampleMinute.objects.filter(minute=OLD + dt.timedelta(minutes=1)).count() == 2
    assert Transaction.objects.get(pk=tx).energy_wh == 500
    assert services.meter_samples_compact(now=NOW) == 0


def test_it_keeps_the_samples_of_a_running_session_raw(charger, settings) -> None:
    settings.METER_SAMPLES_RAW_DAYS = 7
    tx = _session(charger, OLD)
    _record(charger, tx, OLD, 10.0, 100)

    assert services.meter_samples_compact(now=NOW) == 0
    assert MeterSample.objects.count() == 2
