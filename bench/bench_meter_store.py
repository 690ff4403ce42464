"""Benchmark: the whole poll of the Celery task - Modbus reads AND database writes - for 50 meters.

`bench_meters.py` measures the Modbus side alone; this one runs `meters.services.meters_poll_due`,
which also records every reading (latest values, 1-minute history, zone measurements) in one
transaction. Fake meters run in a child process (real pymodbus servers on 127.0.0.1), the
database is a fresh SQLite file (or DATABASE_URL with --use-database-url). Cycles run back to
back on a virtual clock advancing `--step` seconds each, so every meter is due at every cycle and
minute boundaries (history rows) are crossed.

    python bench/bench_meter_store.py                       # 50 meters, 30 cycles
    python bench/bench_meter_store.py --meters 50 --cycles 60 --silent 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere


def _setup_django(use_database_url: bool) -> None:
    """A throw-away data dir and database, migrated."""
    data_dir = tempfile.mkdtemp(prefix="evce-bench-")
    os.environ["EVCE_DATA_DIR"] = data_dir
    if not use_database_url:
        os.environ["DATABASE_URL"] = f"sqlite:///{data_dir}/bench.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evce.settings")
    os.environ.setdefault("LOG_LEVEL", "error")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def _create_meters(ports: list[int], zones: int) -> None:
    """Roles like a real site: one zone meter per zone, a PV meter on a few, the rest EV sub-meters."""
    from bench.bench_meters import _meter_type
    from loadmgmt.models import Zone
    from meters.models import Meter

    zone_rows = [Zone.objects.create(name=f"Zone {n}", max_current_a=250, mode="dynamic", fallback_current_a=32,
                                     add_pv_production=True) for n in range(zones)]
    for index, port in enumerate(ports):
        zone = zone_rows[index % zones]
        if index < zones:
            role = "zone_total"
        elif index < zones + zones // 2:
            role = "pv"
        else:
            role = "ev_submeter"
        Meter.objects.create(name=f"meter{index:02d}", meter_type=_meter_type(index), host="127.0.0.1", port=port,
                             unit_id=1 + index % 247, timeout_s=2.0, poll_period_s=5, role=role, zone=zone)


def _run(args: argparse.Namespace, ports: list[int]) -> None:
    from meters import modbus, services
    from meters.models import MeterReading

    poll_times: list[float] = []
    real_poll = modbus.poll_meters

    async def timed_poll(*a: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            return await real_poll(*a, **kw)
        finally:
            poll_times.append(time.perf_counter() - started)

    modbus.poll_meters = timed_poll  # type: ignore[assignment]  # bench-only instrumentation
    _create_meters(ports, args.zones)
    start = dt.datetime(2026, 1, 5, 12, 0, 0, tzinfo=dt.UTC)
    totals: list[float] = []
    failed = 0
    for cycle in range(args.cycles):
        began = time.perf_counter()
        report = services.meters_poll_due(now=start + dt.timedelta(seconds=cycle * args.step))
        totals.append(time.perf_counter() - began)
        failed += len(report.failed)
        if report.polled != args.meters:
            raise RuntimeError(f"cycle {cycle}: {report.polled} meters polled, expected {args.meters}")
    writes = [total - poll for total, poll in zip(totals, poll_times, strict=True)]
    print(f"meters={args.meters} zones={args.zones} silent={args.silent} cycles={args.cycles} "
          f"step={args.step:g}s failed_reads={failed} history_rows={MeterReading.objects.count()}")
    for label, values in (("whole poll", totals), ("  modbus reads", poll_times), ("  database writes", writes)):
        ms = sorted(v * 1000 for v in values)
        p95 = statistics.quantiles(ms, n=20, method="inclusive")[18]
        print(f"{label:18s} ms: median={statistics.median(ms):7.1f} p95={p95:7.1f} max={ms[-1]:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=50)
    parser.add_argument("--zones", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--step", type=float, default=5.0, help="virtual seconds between cycles")
    parser.add_argument("--silent", type=int, default=0, help="how many meters never answer")
    parser.add_argument("--use-database-url", action="store_true", help="use DATABASE_URL instead of a temp SQLite")
    args = parser.parse_args()
    _setup_django(args.use_database_url)

    from bench.bench_meters import _serve_in_child

    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=_serve_in_child, args=(args.meters, args.silent, child_end), daemon=True)
    child.start()
    try:
        if not parent_end.poll(60):
            raise RuntimeError("fake meter servers did not start within 60 s")
        _run(args, parent_end.recv())
    finally:
        parent_end.send("stop")
        child.join(10)
        if child.is_alive():
            child.terminate()


if __name__ == "__main__":
    main()
