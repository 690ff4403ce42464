"""The OCPP load driver of bench/bench_ocpp.py at small N (the benchmark itself is not a timed test)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from chargers.models import Charger, RegistrationStatus
from transactions.models import MeterSample

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import ocpp_load  # noqa: E402 - the driver lives beside the benchmark


def test_the_driver_boots_chargers_and_every_meter_value_is_stored(ocpp_url) -> None:
    for i in range(3):
        Charger.objects.create(charge_point_id=f"LOAD-{i:05d}", registration_status=RegistrationStatus.ACCEPTED)

    result = asyncio.run(ocpp_load.run(f"{ocpp_url}/ocpp", 3, 6.0, 1.0, "LOAD-", 10.0, warmup_s=0.5))

    assert result["connected"] == 3 and result["errors"] == 0
    assert result["p50_ms"] is not None and result["completed_per_s"] > 0
    assert result["answered_of_sent"] is True and result["sent_per_s"] > 0
    assert result["driver_loop_lag_p99_ms"] is not None and result["driver_gc_pause_s"] >= 0
    sent = MeterSample.objects.filter(charger__charge_point_id__startswith="LOAD-").count()
    assert sent > 0 and sent % 5 == 0  # five sampled values per MeterValues, none lost


def test_the_drivers_collector_is_kept_short_while_it_drives_and_restored_after() -> None:
    import gc

    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    with ocpp_load.DriverPauses() as pauses:
        assert gc.get_threshold() == ocpp_load.DriverPauses.THRESHOLDS
        assert gc.get_freeze_count() > frozen_before  # what existed is out of the collector's reach
        gc.collect()  # a pause it counts
    assert pauses.total_s > 0 and pauses.max_s > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen_before
