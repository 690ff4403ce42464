"""Benchmark of one database call as the web process makes it, with and without the health check.

Channels ends every database call by marking its connection for a health check (a `SELECT 1`
round trip on PostgreSQL) before its next use; `evce.postgresql` skips that check when the
server answered the connection less than `HEALTH_CHECK_AFTER_S` ago. This times a small call
(a one-row UPDATE committed, between the two `close_old_connections` Channels runs) both ways,
per call: the client's CPU (this process), the PostgreSQL backend's CPU (from /proc) and the wall
time. On SQLite the check costs nothing and both ways are the same call.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/evce_call python bench/bench_db_call.py [--calls 3000] [--rounds 3]

Each figure is the median of `--rounds` rounds, the two ways alternating. A throw-away SQLite
database is used unless DATABASE_URL is set (its chargers are deleted first: give it a database
of its own).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from throwaway import server_cpu_s, setup_django  # beside this script: the project, a throw-away database

setup_django()

from django.core.management import call_command  # noqa: E402
from django.db import close_old_connections, connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from chargers.models import Charger  # noqa: E402
from evce.postgresql import base as evce_postgresql  # noqa: E402

WAYS = {"health check before every call": 0.0,
        "health check after a quiet second (evce.postgresql)": evce_postgresql.HEALTH_CHECK_AFTER_S}


def one_round(charger_pk: int, calls: int, window_s: float) -> dict[str, float]:
    """`calls` database calls with the check's window at `window_s`: per call, in µs."""
    evce_postgresql.HEALTH_CHECK_AFTER_S = window_s
    close_old_connections()
    Charger.objects.filter(pk=charger_pk).exists()  # connected (and checked) before the clock starts
    server_from, client_from, wall_from = server_cpu_s(), time.process_time(), time.perf_counter()
    for _ in range(calls):
        close_old_connections()  # as Channels' database_sync_to_async does before the call ...
        with transaction.atomic():
            Charger.objects.filter(pk=charger_pk).update(last_seen=timezone.now())
        close_old_connections()  # ... and after it
    wall, client, server = (time.perf_counter() - wall_from, time.process_time() - client_from,
                            server_cpu_s() - server_from)
    return {"wall_us": 1e6 * wall / calls, "client_us": 1e6 * client / calls, "server_us": 1e6 * server / calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    Charger.objects.all().delete()
    charger_pk = Charger.objects.create(charge_point_id="BENCH-CALL").pk
    rounds: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    try:
        for _ in range(args.rounds):
            for way, window_s in WAYS.items():
                rounds[way].append(one_round(charger_pk, args.calls, window_s))
    finally:
        evce_postgresql.HEALTH_CHECK_AFTER_S = WAYS["health check after a quiet second (evce.postgresql)"]
    results = {way: {figure: round(statistics.median(r[figure] for r in measured), 1)
                     for figure in ("wall_us", "client_us", "server_us")} for way, measured in rounds.items()}
    print(f"{connection.vendor}, {args.calls} calls x {args.rounds} rounds, per call (median):")
    for way, figures in results.items():
        print(f"  {way:<55} wall {figures['wall_us']:>7} µs  client {figures['client_us']:>7} µs"
              f"  server {figures['server_us']:>7} µs")
    if args.json:
        args.json.write_text(json.dumps({"backend": connection.vendor, "calls": args.calls, "rounds": args.rounds,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
