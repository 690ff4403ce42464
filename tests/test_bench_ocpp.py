"""The OCPP load driver of bench/bench_ocpp.py at small N (the benchmark itself is not a timed test)."""

from __future__ import annotations

import asyncio
import sys
import time
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


def test_the_warm_up_ends_after_its_least_once_server_calls_are_quiet_and_never_past_its_most() -> None:
    over = ocpp_load.warm_up_over
    at = {"started": 100.0, "min_s": 10.0, "quiet_s": 5.0, "max_s": 60.0}
    assert over(now=105.0, last_call_at=0.0, **at) is None  # not before the least
    assert over(now=110.0, last_call_at=0.0, **at) == "quiet"  # no call at all: quiet since the start
    assert over(now=110.0, last_call_at=107.0, **at) is None  # a call 3 s ago
    assert over(now=112.0, last_call_at=107.0, **at) == "quiet"
    assert over(now=159.0, last_call_at=158.0, **at) is None
    assert over(now=160.0, last_call_at=159.5, **at) == "max"  # calls never stop: the most
    fixed = {**at, "quiet_s": 0.0}
    assert over(now=109.9, last_call_at=109.0, **fixed) is None
    assert over(now=110.0, last_call_at=109.9, **fixed) == "fixed"  # --quiet 0: exactly the least


class _Answering:
    """A charger of the fleet without a network: every MeterValues answered at once."""

    def __init__(self) -> None:
        self.ws = object()
        self.server_call_at = 0.0
        self.sent_at: list[float] = []

    async def call(self, action: str, payload: dict[str, object]) -> dict[str, object]:
        self.sent_at.append(time.monotonic())
        return {}

    def meter_values(self) -> dict[str, object]:
        return {"connectorId": 1, "meterValue": []}


def test_the_measured_window_opens_only_once_the_fleets_server_calls_have_stopped() -> None:
    fleet = [_Answering() for _ in range(4)]

    class Opened(asyncio.Event):
        at = 0.0

        def set(self) -> None:  # the window's start: nothing else runs between it and this
            self.at = time.monotonic()
            super().set()

    async def scenario() -> tuple[dict[str, object], float, float]:
        opened = Opened()
        started = time.monotonic()

        async def server_calls_for(seconds: float) -> float:
            while time.monotonic() - started < seconds:
                fleet[1].server_call_at = time.monotonic()
                await asyncio.sleep(0.02)
            return fleet[1].server_call_at

        calls = asyncio.ensure_future(server_calls_for(0.6))
        drive = asyncio.ensure_future(ocpp_load.drive(fleet, 40.0, 0.5, 0.1, quiet_s=0.3, max_warmup_s=30.0,
                                                      window_opened=opened))
        await opened.wait()
        return await drive, await calls, opened.at

    result, last_call_at, opened_at = asyncio.run(scenario())

    assert result["warmup_ended"] == "quiet"
    assert opened_at >= last_call_at + 0.3  # the window opened after the quiet, not at the least
    assert result["errors"] == 0 and result["answered_of_sent"] is True and result["sent_per_s"] > 0
    # Sent before the window opened: answered (their samples count) but not measured.
    sent = sum(len(charger.sent_at) for charger in fleet)
    assert result["meter_values_answered"] == sent
    in_window = sum(1 for charger in fleet for at in charger.sent_at if at >= opened_at)
    assert 0 < in_window < sent and result["sent_per_s"] == round(in_window / 0.5, 1)


def test_a_charger_notes_when_the_servers_last_call_reached_it() -> None:
    import json

    class _Socket:
        def __init__(self) -> None:
            self.sent: list[str] = []

        def __aiter__(self):  # type: ignore[no-untyped-def]
            async def frames():  # type: ignore[no-untyped-def]
                yield json.dumps([3, "mine", {}])  # an answer to the charger's own call: not a server call
                yield json.dumps([2, "c1", "ChangeConfiguration", {"key": "K", "value": "V"}])
            return frames()

        async def send(self, text: str) -> None:
            self.sent.append(text)

    charger = ocpp_load.Charger("ws://unused", "NOTE-1")
    charger.ws = _Socket()
    before = time.monotonic()
    asyncio.run(charger._reader())
    assert charger.server_call_at >= before
    assert json.loads(charger.ws.sent[0]) == [3, "c1", {"status": "Accepted"}]
    assert charger.configuration == {"K": "V"}
