"""OCPP 1.6J load driver: N chargers, each sending MeterValues at a steady share of a total rate.

Imports nothing of the project (it is pointed at the project or at the bare baseline in
`bench/bare_server.py` alike). Each charger connects, boots, starts one transaction, then
sends MeterValues (energy register, three phase currents, power: 5 sampled values) at
`rate / chargers` per second with a random phase, one outstanding CALL at a time as the
protocol says. Server-initiated calls (boot configuration, profiles) are answered; like a real
charger, each keeps the configuration set by ChangeConfiguration and the version of the local
list it accepted across reconnects (GetConfiguration and GetLocalListVersion answer from them).

Usage: python bench/ocpp_load.py ws://127.0.0.1:8000/ocpp --chargers 250 --rate 250 --seconds 20
Prints one JSON object: offered and completed MeterValues/s, latency p50/p95/p99 (ms), errors.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import math
import random
import statistics
import time
import uuid
from typing import Any

import websockets

_ANSWERS: dict[str, dict[str, Any]] = {
    "TriggerMessage": {"status": "Accepted"},
}


class Charger:
    def __init__(self, url: str, cp_id: str) -> None:
        self.url, self.cp_id = url, cp_id
        self.ws: Any = None
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self.transaction_id: int | None = None
        self.energy_wh = 0
        self.profiles: list[tuple[float, float | None]] = []
        # What a charger keeps across reboots and reconnects: its configuration and local list version.
        self.configuration: dict[str, str] = {}
        self.list_version = 0
        self.server_call_at = 0.0  # when the server's last CALL arrived (monotonic; 0: none yet)

    async def connect(self, timeout_s: float) -> None:
        self.ws = await websockets.connect(f"{self.url}/{self.cp_id}", subprotocols=["ocpp1.6"],
                                           open_timeout=timeout_s, ping_interval=None, max_queue=None)
        asyncio.ensure_future(self._reader())

    async def _reader(self) -> None:
        try:
            async for text in self.ws:
                frame = json.loads(text)
                if frame[0] == 2:
                    self.server_call_at = time.monotonic()
                    answer = self.answer(frame[2], frame[3] if len(frame) > 3 else {})
                    await self.ws.send(json.dumps([3, frame[1], answer]))
                    if frame[2] == "SetChargingProfile":  # (answered at, limit): the overload benchmark
                        self.profiles.append((time.time(), _profile_limit(frame[3])))
                elif (future := self._waiting.pop(frame[1], None)) is not None and not future.done():
                    future.set_result(frame)
        except websockets.ConnectionClosed:
            pass
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("closed"))

    def answer(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The answer to a server CALL; the configuration and the list version are kept."""
        if action == "ChangeConfiguration":
            self.configuration[str(payload.get("key"))] = str(payload.get("value"))
        elif action == "GetConfiguration":
            keys = payload.get("key") or sorted(self.configuration)
            return {"configurationKey": [{"key": key, "value": self.configuration[key], "readonly": False}
                                         for key in keys if key in self.configuration]}
        elif action == "GetLocalListVersion":
            return {"listVersion": self.list_version}
        elif action == "SendLocalList":
            self.list_version = int(payload.get("listVersion", 0))
        return _ANSWERS.get(action, {"status": "Accepted"})

    async def call(self, action: str, payload: dict[str, Any], timeout_s: float = 60.0) -> Any:
        unique_id = uuid.uuid4().hex[:16]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[unique_id] = future
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        frame = await asyncio.wait_for(future, timeout_s)
        if frame[0] != 3:
            raise RuntimeError(f"{action}: {frame}")
        return frame[2]

    async def boot(self) -> None:
        await self.call("BootNotification", {"chargePointVendor": "Bench", "chargePointModel": "Load"})
        await self.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"})
        answer = await self.call("StartTransaction", {"connectorId": 1, "idTag": "BENCH", "meterStart": 0,
                                                      "timestamp": _now()})
        self.transaction_id = answer.get("transactionId")

    def meter_values(self) -> dict[str, Any]:
        self.energy_wh += 30
        sampled = [{"measurand": "Energy.Active.Import.Register", "unit": "Wh", "value": str(self.energy_wh)}]
        sampled += [{"measurand": "Current.Import", "phase": phase, "unit": "A", "value": "15.8"}
                    for phase in ("L1", "L2", "L3")]
        sampled.append({"measurand": "Power.Active.Import", "unit": "W", "value": "10900"})
        payload: dict[str, Any] = {"connectorId": 1, "meterValue": [{"timestamp": _now(), "sampledValue": sampled}]}
        if self.transaction_id is not None:
            payload["transactionId"] = self.transaction_id
        return payload


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _profile_limit(payload: dict[str, Any]) -> float | None:
    try:
        periods = payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"]
        return float(periods[0]["limit"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(url: str, chargers: int, rate: float, seconds: float, prefix: str, connect_timeout_s: float,
              warmup_s: float = 2.0) -> dict[str, Any]:
    fleet = [Charger(url, f"{prefix}{i:05d}") for i in range(chargers)]
    result = await bring_up(fleet, connect_timeout_s)
    result.update(await drive(fleet, rate, seconds, warmup_s))
    for charger in fleet:
        if charger.ws is not None:
            await charger.ws.close()
    return result


async def bring_up(fleet: list[Charger], connect_timeout_s: float) -> dict[str, Any]:
    """Connect and boot every charger (200 at a time, 5 tries each); a transaction starts on each."""
    started = time.monotonic()
    connect_failures = 0
    semaphore = asyncio.Semaphore(200)

    async def one(charger: Charger) -> bool:
        async with semaphore:
            for _ in range(5):
                try:
                    await charger.connect(connect_timeout_s)
                    await charger.boot()
                    return True
                except Exception:  # noqa: BLE001 - counted and retried
                    nonlocal connect_failures
                    connect_failures += 1
                    await asyncio.sleep(0.5)
        return False

    up = sum(await asyncio.gather(*(one(charger) for charger in fleet)))
    return {"chargers": len(fleet), "connected": up, "connect_boot_s": round(time.monotonic() - started, 2),
            "connect_failures": connect_failures}


class DriverPauses:
    """The garbage collector's pauses of this process while the block runs (gc.callbacks), kept
    short: what exists when the block starts (the fleet's connections) is frozen out of the
    collector's reach and its thresholds raised, as the server does (evce/gctune.py); both are
    restored after. With Python's defaults this process, driving 5,000 websockets, paused for
    1.6 s in 45 s, up to 313 ms at once: every MeterValues in flight then was measured that much
    slower, whichever server answered it."""

    THRESHOLDS = (50_000, 50, 100)

    def __init__(self) -> None:
        self.total_s = 0.0
        self.max_s = 0.0
        self._started = 0.0
        self._thresholds: tuple[int, int, int] = gc.get_threshold()

    def _callback(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._started
            self.total_s += pause
            self.max_s = max(self.max_s, pause)

    def __enter__(self) -> DriverPauses:
        self._thresholds = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*self.THRESHOLDS)
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)
        gc.set_threshold(*self._thresholds)
        gc.unfreeze()


def warm_up_over(*, now: float, started: float, last_call_at: float, min_s: float, quiet_s: float,
                 max_s: float) -> str | None:
    """Why the warm-up ends at `now` ("fixed", "quiet", "max"), or None while it goes on.

    Not before `min_s`. With `quiet_s` > 0 it ends once no server CALL has reached the fleet
    for `quiet_s` (the boot configuration and the control loop's first profiles are over), and
    at `max_s` at the latest; with `quiet_s` = 0 it lasts `min_s` exactly."""
    waited = now - started
    if waited < min_s:
        return None
    if quiet_s <= 0:
        return "fixed"
    if now - max(last_call_at, started) >= quiet_s:
        return "quiet"
    return "max" if waited >= max_s else None


async def warm_up(fleet: list[Charger], *, min_s: float, quiet_s: float, max_s: float,
                  poll_s: float = 0.25) -> dict[str, Any]:
    """Wait until `warm_up_over` says so; how long it took and why it ended."""
    started = time.monotonic()
    while True:
        now = time.monotonic()
        last_call_at = max((charger.server_call_at for charger in fleet), default=0.0)
        if (ended := warm_up_over(now=now, started=started, last_call_at=last_call_at, min_s=min_s,
                                  quiet_s=quiet_s, max_s=max_s)) is not None:
            return {"warmup_s": round(now - started, 1), "warmup_ended": ended}
        await asyncio.sleep(poll_s)


async def drive(fleet: list[Charger], rate: float, seconds: float, warmup_s: float, *, quiet_s: float = 0.0,
                max_warmup_s: float = 180.0, window_opened: asyncio.Event | None = None) -> dict[str, Any]:
    """MeterValues at `rate` per second over the fleet: a warm-up, then `seconds` measured.

    The warm-up lasts `warmup_s`, or with `quiet_s` > 0 at least `warmup_s` and until the
    fleet has heard no server CALL for `quiet_s` (at most `max_warmup_s`): a fixed warm-up
    that was right for one fleet size let another's boot configuration, spread over up to
    30 s after a storm, fall into the window. `window_opened` is set when the window opens
    (what else measures the window, e.g. the server's CPU, starts then)."""
    chargers = len(fleet)
    answered = 0  # every MeterValues answered, warm-up included: the samples the server must hold
    latencies: list[float] = []
    completed_in_window: list[float] = []  # answers received within the measured window
    sent_in_window = 0  # MeterValues sent within it: each answered (latencies) or failed (errors)
    errors = 0
    period_s = chargers / rate
    # Known once the warm-up ends (`open_window`); until then nothing is in the window.
    measure_from = stop_at = math.inf
    opened = window_opened or asyncio.Event()

    async def open_window() -> dict[str, Any]:
        nonlocal measure_from, stop_at
        warmed = await warm_up(fleet, min_s=warmup_s, quiet_s=quiet_s, max_s=max_warmup_s)
        measure_from = time.monotonic()
        stop_at = measure_from + seconds
        opened.set()
        return warmed

    async def drive_one(charger: Charger) -> None:
        nonlocal errors, answered, sent_in_window
        await asyncio.sleep(random.uniform(0, period_s))  # noqa: S311 - spread, not security
        next_at = time.monotonic()
        while next_at < stop_at:
            sent = time.monotonic()
            if sent >= measure_from:  # (scheduled before stop_at: the loop's condition)
                sent_in_window += 1
            try:
                await charger.call("MeterValues", charger.meter_values())
                done = time.monotonic()
                answered += 1
                if measure_from <= done < stop_at:
                    completed_in_window.append(done)
                if sent >= measure_from:
                    latencies.append(done - sent)
            except Exception:  # noqa: BLE001 - counted
                if sent >= measure_from:
                    errors += 1
            next_at += period_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def loop_lag() -> list[float]:
        """How late this process's event loop wakes from a 5 ms sleep, over the window: what it
        adds itself to each latency it measures."""
        await opened.wait()
        lags = []
        while time.monotonic() < stop_at:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - before - 0.005) * 1000)
        return lags

    with DriverPauses() as pauses:
        window = asyncio.ensure_future(open_window())
        lag = asyncio.ensure_future(loop_lag())
        await asyncio.gather(*(drive_one(charger) for charger in fleet if charger.ws is not None))
        warmed = await window
        driver_lags = await lag
    millis = [value * 1000 for value in latencies]
    return {
        **warmed,
        "offered_per_s": rate, "seconds": seconds, "meter_values_answered": answered,
        "completed_per_s": round(len(completed_in_window) / seconds, 1), "errors": errors,
        # Sustained: what was sent in the window at the offered rate, all of it answered. (Answers
        # counted by arrival miss or gain one or two at the window's edges: 999.9/s at 1,000.)
        "sent_per_s": round(sent_in_window / seconds, 1),
        "answered_of_sent": len(latencies) == sent_in_window,
        "p50_ms": _round(percentile(millis, 0.50)), "p95_ms": _round(percentile(millis, 0.95)),
        "p99_ms": _round(percentile(millis, 0.99)),
        "mean_ms": _round(statistics.fmean(millis) if millis else None),
        # This process's own garbage-collection pauses while it drove: a latency measured across
        # one includes it, whichever server answered.
        "driver_gc_pause_s": round(pauses.total_s, 3), "driver_gc_max_ms": round(pauses.max_s * 1000, 1),
        "driver_loop_lag_p95_ms": _round(percentile(driver_lags, 0.95)),
        "driver_loop_lag_p99_ms": _round(percentile(driver_lags, 0.99)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="websocket base, e.g. ws://127.0.0.1:8000/ocpp")
    parser.add_argument("--chargers", type=int, default=250)
    parser.add_argument("--rate", type=float, default=250.0, help="MeterValues per second, all chargers")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--prefix", default="BENCH-")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.chargers, args.rate, args.seconds, args.prefix, args.connect_timeout))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
