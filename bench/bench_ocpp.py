"""MeterValues throughput and latency of the OCPP endpoint, on the embedded default.

Starts, in a temporary directory: Redis, a fresh SQLite database (migrated), Daphne with
`OCPP_UNKNOWN_CHARGERS=accept`; drives it with `bench/ocpp_load.py` (N chargers, a total
MeterValues rate); verifies by count that every sample was stored; stops everything.
With `--baseline`, the same load also runs against `bench/bare_server.py` (bare Daphne +
`ocpp` ChargePoint, no database) started the same way, for a side-by-side table.

Usage: .venv/bin/python bench/bench_ocpp.py --chargers 250 --rate 250 --seconds 15 [--baseline]
       [--json out.json] [--py-spy out.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ocpp_load  # noqa: E402 - the driver sits beside this script

BASE_DIR = Path(__file__).resolve().parent.parent
SAMPLES_PER_METER_VALUES = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _measure(url: str, pid: int, args: argparse.Namespace, py_spy: str | None) -> dict[str, Any]:
    idle_kb = _rss_kb(pid)
    spy = None
    if py_spy:
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-o",  # noqa: S603
                                py_spy, "-d", str(int(args.seconds + 10)), "--nonblocking", "-t",
                                *(["-f", "raw"] if py_spy.endswith(".txt") else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = asyncio.run(ocpp_load.run(url, args.chargers, args.rate, args.seconds, "BENCH-", 60.0,
                                       warmup_s=args.warmup))
    result["server_kb_per_charger"] = round((_rss_kb(pid) - idle_kb) / max(1, args.chargers), 1)
    if spy is not None:
        spy.wait(60)
    return result


def _run_project(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    redis_port, web_port = _free_port(), _free_port()
    database = work / "bench.sqlite3"
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{database}", REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
               DJANGO_SETTINGS_MODULE="evce.settings", EVCE_DATA_DIR=str(work), OCPP_UNKNOWN_CHARGERS="accept",
               OCPP_REGISTRATIONS_PER_ADDRESS="1000000", OCPP_LOGIN_FAILURES_PER_ADDRESS="1000000",
               LOG_LEVEL="warning", HTTPS="false", **dict(args.env))
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],  # noqa: S607
                             stdout=subprocess.DEVNULL, cwd=work)
    daphne = None
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env,  # noqa: S603
                       check=True)
        daphne = subprocess.Popen([sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(web_port),  # noqa: S603
                                   "evce.asgi:application"], cwd=BASE_DIR, env=env)
        _wait_for_port(web_port)
        result = _measure(f"ws://127.0.0.1:{web_port}/ocpp", daphne.pid, args, args.py_spy)
        time.sleep(1.0)  # anything still buffered is written within the buffer delay
        with sqlite3.connect(database) as db:
            (stored,) = db.execute("SELECT COUNT(*) FROM transactions_metersample").fetchone()
        result["samples_stored"] = stored
        return result
    finally:
        for process in (daphne, redis):
            if process is not None:
                process.terminate()
                process.wait(15)


def _run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port),  # noqa: S603
                               "bare_server:application"], cwd=Path(__file__).resolve().parent)
    try:
        _wait_for_port(port)
        return _measure(f"ws://127.0.0.1:{port}/ocpp", server.pid, args, None)
    finally:
        server.terminate()
        server.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=250)
    parser.add_argument("--rate", type=float, default=250.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds of load before measuring (the boot configuration runs meanwhile)")
    parser.add_argument("--baseline", action="store_true", help="also run the bare Daphne + ocpp baseline")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--py-spy", help="record a py-spy flame graph of the project's Daphne here")
    parser.add_argument("--env", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="extra environment for the project's Daphne (e.g. --env DB_CONN_MAX_AGE 0)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evce-bench-"))
    try:
        results = {"project": _run_project(args, work)}
        if args.baseline:
            results["baseline"] = _run_baseline(args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    expected = results["project"]["completed_per_s"] * args.seconds * SAMPLES_PER_METER_VALUES
    print(f"{'':10} {'chargers':>8} {'offered/s':>9} {'done/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
          f"{'errors':>6} {'boot s':>6} {'KB/cp':>6}")
    for name, row in results.items():
        print(f"{name:10} {row['chargers']:>8} {row['offered_per_s']:>9} {row['completed_per_s']:>7} "
              f"{row['p50_ms']!s:>7} {row['p95_ms']!s:>7} {row['p99_ms']!s:>7} {row['errors']:>6} "
              f"{row['connect_boot_s']:>6} {row['server_kb_per_charger']:>6}")
    print(f"samples stored: {results['project']['samples_stored']} (at least {int(expected)} expected from the "
          "measured window, plus warm-up)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
