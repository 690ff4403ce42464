"""Benchmark of the batched row writes of the OCPP hot path, beside what Django does for them.

A new fleet's first connection registers its chargers and creates their limit and connector
rows; every connection and boot updates its charger's row. This times each way of writing a
batch of such rows, per row: the client's CPU (this process), the database server's CPU (the
PostgreSQL backend serving this connection, from /proc; SQLite runs in this process, so its
work is in the client's figure) and the wall time.

    python bench/bench_rows.py [--rows 50] [--batches 40] [--rounds 3] [--json out.json]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/evce_rows python bench/bench_rows.py

Each figure is the median of `--rounds` rounds of `--batches` batches of `--rows` rows, each
batch in its own transaction, as the services write them. A throw-away SQLite database is used
unless DATABASE_URL is set (its tables are emptied first: give it a database of its own).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from throwaway import server_cpu_s, setup_django  # beside this script: the project, a throw-away database

setup_django()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from chargers.bulkinsert import insert_new, update_rows  # noqa: E402
from chargers.models import Charger, RegistrationStatus  # noqa: E402
from loadmgmt.models import LimitPurpose, LimitState  # noqa: E402

NOW = dt.datetime(2026, 12, 5, 6, 0, tzinfo=dt.UTC)
_CONNECTION_COLUMNS = ("connected", "channel_name", "connected_at", "last_seen")


# --- the ways compared: each writes one batch (in the transaction the caller opened) ------------

def register_bulk_create(ids: Sequence[str]) -> None:
    Charger.objects.bulk_create([Charger(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED,
                                         heartbeat_interval_s=300) for cp_id in ids])


def register_insert_new(ids: Sequence[str]) -> None:
    insert_new(Charger, [{"charge_point_id": cp_id, "registration_status": RegistrationStatus.ACCEPTED,
                          "heartbeat_interval_s": 300} for cp_id in ids])
    # The keys read back, as chargers_identify_many needs them (bulk_create returned them).
    list(Charger.objects.filter(charge_point_id__among=set(ids)).values_list("pk", "charge_point_id"))


def limits_bulk_create(pks: Sequence[int]) -> None:
    LimitState.objects.bulk_create([LimitState(charger_id=pk, connector_id=0, purpose=LimitPurpose.TX_DEFAULT,
                                               state_since=0.0) for pk in pks], ignore_conflicts=True)


def limits_insert_new(pks: Sequence[int]) -> None:
    insert_new(LimitState, [{"charger_id": pk, "connector_id": 0, "purpose": LimitPurpose.TX_DEFAULT,
                             "state_since": 0.0} for pk in pks], ignore_conflicts=True)


def connections_orm(pks: Sequence[int]) -> None:
    for pk in pks:
        Charger.objects.filter(pk=pk).update(connected=True, channel_name=f"c{pk}", connected_at=NOW, last_seen=NOW)


def connections_executemany(pks: Sequence[int]) -> None:
    """One statement run per row: what update_rows did on PostgreSQL before it used arrays."""
    assignments = ", ".join(f"{connection.ops.quote_name(column)} = %s" for column in _CONNECTION_COLUMNS)
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(f'UPDATE "chargers_charger" SET {assignments} WHERE "id" = %s',  # noqa: S608
                           [(True, f"c{pk}", adapt(NOW), adapt(NOW), pk) for pk in pks])


def connections_update_rows(pks: Sequence[int]) -> None:
    update_rows(Charger, _CONNECTION_COLUMNS, [(pk, True, f"c{pk}", NOW, NOW) for pk in pks])


def timed(write: Callable[[Sequence[Any]], None], batches: Sequence[Sequence[Any]]) -> dict[str, float]:
    rows = sum(len(batch) for batch in batches)
    client, server, wall = time.process_time(), server_cpu_s(), time.perf_counter()
    for batch in batches:
        with transaction.atomic():
            write(batch)
    return {"client_us": (time.process_time() - client) / rows * 1e6,
            "server_us": (server_cpu_s() - server) / rows * 1e6,
            "wall_us": (time.perf_counter() - wall) / rows * 1e6}


def run(rows: int, batches: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per way: median per-row figures over the rounds (each round on new chargers)."""
    figures: dict[str, list[dict[str, float]]] = {}

    def record(name: str, result: dict[str, float]) -> None:
        figures.setdefault(name, []).append(result)

    for round_no in range(rounds):
        fleets: dict[str, list[list[int]]] = {}
        for way, register in (("bulk_create", register_bulk_create), ("insert_new", register_insert_new)):
            ids = [[f"R{round_no}-{way}-{b}-{n}" for n in range(rows)] for b in range(batches)]
            record(f"register: {way}", timed(register, ids))
            fleets[way] = [list(Charger.objects.filter(charge_point_id__among=set(batch)).values_list("pk", flat=True))
                           for batch in ids]
        record("limit rows: bulk_create", timed(limits_bulk_create, fleets["bulk_create"]))
        record("limit rows: insert_new", timed(limits_insert_new, fleets["insert_new"]))
        for name, write in (("ORM update per row", connections_orm), ("executemany", connections_executemany),
                            ("update_rows", connections_update_rows)):
            record(f"connections: {name}", timed(write, fleets["insert_new"]))
    return {name: {key: round(statistics.median(result[key] for result in results), 1) for key in results[0]}
            for name, results in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50, help="rows per batch (a batch of the services)")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:  # a database of its own: start empty
        for table in ("loadmgmt_limitstate", "chargers_charger"):
            cursor.execute(f'DELETE FROM "{table}"')  # noqa: S608 - our own names
    results = run(args.rows, args.batches, args.rounds)
    print(f"{connection.vendor}: {args.rows} rows per batch, {args.batches} batches, median of {args.rounds} rounds")
    print(f"{'per row':34} {'client µs':>10} {'server µs':>10} {'wall µs':>10}")
    for name, figure in results.items():
        print(f"{name:34} {figure['client_us']:>10.1f} {figure['server_us']:>10.1f} {figure['wall_us']:>10.1f}")
    if args.json:
        args.json.write_text(json.dumps({"backend": connection.vendor, "rows": args.rows, "batches": args.batches,
                                         "rounds": args.rounds, "results": results}, indent=2))


if __name__ == "__main__":
    main()
