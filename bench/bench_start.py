"""Web process start: from spawning one Daphne process to its first answer, project beside bare.

A restarted server's chargers wait for this: every reconnect-storm figure of
`bench/bench_scale.py` has it inside (the shared socket listens before the processes are up).
The project's process imports Django, the apps, Celery and redis-py, warms up what its first
chargers would otherwise load and tunes its garbage collector (evce/asgi.py); the bare baseline
(`bench/bare_server.py`) imports Daphne, Channels and the `ocpp` library only. Both are started
as `bench_scale.Server` starts them, one after the other, `--runs` times each; the first answer
is Twisted's to a request line it cannot parse, which needs the server up and nothing else.
Prints the median, fastest and slowest start per server and their ratio; `--json` saves them.

Usage: .venv/bin/python bench/bench_start.py [--runs 9] [--backend postgres] [--json start.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scale  # noqa: E402 - beside this script


def first_answer_s(server: bench_scale.Server, timeout_s: float = 60.0) -> float:
    """Start `server`, return the seconds until it answered its first request, stop it."""
    started = time.monotonic()
    server.start()
    try:
        while time.monotonic() - started < timeout_s:
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=1.0) as sock:
                    sock.sendall(b"NOT HTTP\r\n\r\n")
                    if sock.recv(64):
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.005)
        raise RuntimeError(f"{server.kind} server did not answer within {timeout_s} s")
    finally:
        server.stop()


def measure(servers: dict[str, bench_scale.Server], runs: int) -> dict[str, dict[str, float]]:
    """Start each server `runs` times, alternating (a slower minute of the machine hits both)."""
    times: dict[str, list[float]] = {kind: [] for kind in servers}
    for _ in range(runs):
        for kind, server in servers.items():
            times[kind].append(first_answer_s(server))
    return {kind: {"median_s": round(statistics.median(found), 3), "fastest_s": round(min(found), 3),
                   "slowest_s": round(max(found), 3), "runs": len(found)} for kind, found in times.items()}


def table(figures: dict[str, dict[str, float]]) -> str:
    lines = ["server   median s  fastest s  slowest s"]
    lines += [f"{kind:<8} {f['median_s']:>8}  {f['fastest_s']:>9}  {f['slowest_s']:>9}" for kind, f in figures.items()]
    if "project" in figures and "bare" in figures:
        lines.append(f"project / bare (median): {figures['project']['median_s'] / figures['bare']['median_s']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--backend", choices=("embedded", "postgres"), default="embedded")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/evce_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="evce-start-"))
    if args.backend == "postgres":
        backend = bench_scale.Backend("postgres", args.database_url, args.redis_url, work)
    else:
        backend = bench_scale.Backend("embedded", f"sqlite:///{work}/bench.sqlite3", "redis://127.0.0.1:0/0", work)
    try:
        backend.prepare()  # migrated, bytecode and validators compiled: as bin/run leaves an install
        figures = measure({"project": bench_scale.Server("project", backend), "bare": bench_scale.Server("bare", None)},
                          args.runs)
    finally:
        backend.close()
        shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {"backend": args.backend, "load_average": bench_scale.load_average(), **figures}
    print(table(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
