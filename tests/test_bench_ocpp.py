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
    sent = MeterSample.objects.filter(charger__charge_point_id__startswith="LOAD-").count()
    assert sent > 0 and sent % 5 == 0  # five sampled values per MeterValues, none lost
