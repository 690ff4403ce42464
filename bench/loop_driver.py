"""The project side of `bench/bench_scale.py`: site set-up, control ticks and counts, one JSON line out.

Run with the environment of the server being benchmarked (DATABASE_URL, REDIS_URL, …):

    python bench/loop_driver.py setup --chargers 250      # root zone (32 A per charger) + the BENCH badge
    python bench/loop_driver.py converge                   # ticks until one sends nothing (answers awaited)
    python bench/loop_driver.py cut --fraction 0.25 --follow 30   # root zone limit x fraction, tick at once,
                                                                   # then every loop period (as beat) for 30 s
    python bench/loop_driver.py count                      # meter samples stored

`cut` prints the wall-clock time (time.time()) just before the limit was lowered, so the caller
can measure until each charger has answered its new profile.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evce.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from badges.models import Badge  # noqa: E402
from evce import gctune  # noqa: E402
from loadmgmt import apply  # noqa: E402
from loadmgmt.control import run_tick  # noqa: E402
from loadmgmt.models import LimitState, SiteSettings, Zone  # noqa: E402
from transactions.models import MeterSample  # noqa: E402

ROOT = "Bench connection point"
# Every hand-over to the channel layer: (perf_counter at start, at end, calls), for the cut's timeline.
handovers: list[tuple[float, float, int]] = []
limits_sent: dict[str, list[float]] = {}  # per profile purpose, the limits handed over
_cast_calls = apply.cast_calls


def _timed_cast_calls(casts: list) -> list[str | None]:  # type: ignore[type-arg]
    for cast in casts:
        profile = cast.payload["csChargingProfiles"]
        limits_sent.setdefault(profile["chargingProfilePurpose"], []).append(
            profile["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"])
    started = time.perf_counter()
    errors = _cast_calls(casts)
    handovers.append((started, time.perf_counter(), len(casts)))
    return errors


apply.cast_calls = _timed_cast_calls  # type: ignore[assignment]
gctune.tune(settings.GC_THRESHOLDS)  # as the Celery worker that runs the loop (evce/celery.py)


def setup(chargers: int) -> dict[str, object]:
    zone, _ = Zone.objects.update_or_create(name=ROOT, parent=None, defaults={"max_current_a": chargers * 32.0})
    Badge.objects.get_or_create(id_tag="BENCH")
    return {"zone": zone.pk, "max_current_a": zone.max_current_a}


def converge(max_ticks: int, answer_wait_s: float) -> dict[str, object]:
    """Tick until a tick sends nothing, giving the chargers time to answer between ticks."""
    sent = []
    for _ in range(max_ticks):
        report = run_tick(dt.datetime.now(dt.UTC))
        sent.append(report.sent)
        if not report.sent:
            break
        deadline = time.monotonic() + answer_wait_s
        while time.monotonic() < deadline and LimitState.objects.filter(pending_a__isnull=False).exists():
            time.sleep(0.1)
    return {"sent": sent, "sessions": report.sessions}


def _profilers(seconds: float, server_pid: int | None) -> list[subprocess.Popen[bytes]]:
    """py-spy on this process and on the project's Daphne for the cut, when BENCH_PYSPY_DIR is set."""
    folder = os.environ.get("BENCH_PYSPY_DIR")
    if not folder:
        return []
    spy = str(Path(sys.executable).with_name("py-spy"))
    targets = [("loop", str(os.getpid())), *([("daphne", str(server_pid))] if server_pid else [])]
    # BENCH_PYSPY_GIL=1: only the thread holding the GIL is sampled (where the CPU goes, not the waits).
    gil = ["--gil"] if os.environ.get("BENCH_PYSPY_GIL") else []
    spies = [subprocess.Popen([spy, "record", "-p", pid, "-d", str(int(seconds)), "-r", "200", "--format", "raw",  # noqa: S603
                               *gil, "-o", f"{folder}/cut-{name}.txt"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
             for name, pid in targets]
    time.sleep(1.0)  # attached before the cut
    return spies


def cut(fraction: float, follow_s: float = 0.0, server_pid: int | None = None) -> dict[str, object]:
    """Lower the root zone and tick at once; then, for up to `follow_s`, tick every loop period
    as beat would (what one tick could not send, e.g. raises after decreases, goes then)."""
    zone = Zone.objects.get(name=ROOT, parent=None)
    spies = _profilers(max(5.0, min(follow_s, 15.0)), server_pid)
    period_s = SiteSettings.load().loop_period_s
    started = time.time()
    Zone.objects.filter(pk=zone.pk).update(max_current_a=zone.max_current_a * fraction)
    tick_started = cut_perf = time.perf_counter()
    handovers.clear()
    limits_sent.clear()
    report = run_tick(dt.datetime.now(dt.UTC))
    first_tick_s = time.perf_counter() - tick_started
    sent, ticks = [report.sent], 1
    while time.time() < started + follow_s:
        time.sleep(max(0.0, tick_started + period_s - time.perf_counter()))
        if not sent[-1] and not LimitState.objects.filter(pending_a__isnull=False).exists():
            break
        tick_started = time.perf_counter()
        sent.append(run_tick(dt.datetime.now(dt.UTC)).sent)
        ticks += 1
    for spy in spies:
        spy.wait()
    # When each batch of profiles was handed over, relative to the cut: (start s, end s, profiles).
    timeline = [(round(a - cut_perf, 3), round(b - cut_perf, 3), n) for a, b, n in handovers if n]
    return {"cut_at": started, "tick_s": round(first_tick_s, 3), "sent": sent[0], "sent_per_tick": sent,
            "handovers": timeline,
            "limits_sent": {purpose: [min(v), max(v), len(v)] for purpose, v in limits_sent.items()},
            "sessions": report.sessions, "new_limit_a": zone.max_current_a * fraction}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("setup", "converge", "cut", "count"))
    parser.add_argument("--chargers", type=int, default=250)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--max-ticks", type=int, default=8)
    parser.add_argument("--answer-wait", type=float, default=20.0)
    parser.add_argument("--follow", type=float, default=0.0, help="cut: keep ticking every loop period this long")
    parser.add_argument("--server-pid", type=int, help="cut: the server's pid (py-spy it with BENCH_PYSPY_DIR)")
    args = parser.parse_args()
    if args.step == "setup":
        result = setup(args.chargers)
    elif args.step == "converge":
        result = converge(args.max_ticks, args.answer_wait)
    elif args.step == "cut":
        result = cut(args.fraction, args.follow, args.server_pid)
    else:
        result = {"samples": MeterSample.objects.count()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
