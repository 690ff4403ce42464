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
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evce.settings")

import django  # noqa: E402

django.setup()

from badges.models import Badge  # noqa: E402
from loadmgmt.control import run_tick  # noqa: E402
from loadmgmt.models import LimitState, SiteSettings, Zone  # noqa: E402
from transactions.models import MeterSample  # noqa: E402

ROOT = "Bench connection point"


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


def cut(fraction: float, follow_s: float = 0.0) -> dict[str, object]:
    """Lower the root zone and tick at once; then, for up to `follow_s`, tick every loop period
    as beat would (what one tick could not send, e.g. raises after decreases, goes then)."""
    zone = Zone.objects.get(name=ROOT, parent=None)
    period_s = SiteSettings.load().loop_period_s
    started = time.time()
    Zone.objects.filter(pk=zone.pk).update(max_current_a=zone.max_current_a * fraction)
    tick_started = time.perf_counter()
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
    return {"cut_at": started, "tick_s": round(first_tick_s, 3), "sent": sent[0], "sent_per_tick": sent,
            "sessions": report.sessions, "new_limit_a": zone.max_current_a * fraction}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("setup", "converge", "cut", "count"))
    parser.add_argument("--chargers", type=int, default=250)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--max-ticks", type=int, default=8)
    parser.add_argument("--answer-wait", type=float, default=20.0)
    parser.add_argument("--follow", type=float, default=0.0, help="cut: keep ticking every loop period this long")
    args = parser.parse_args()
    if args.step == "setup":
        result = setup(args.chargers)
    elif args.step == "converge":
        result = converge(args.max_ticks, args.answer_wait)
    elif args.step == "cut":
        result = cut(args.fraction, args.follow)
    else:
        result = {"samples": MeterSample.objects.count()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
