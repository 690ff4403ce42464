"""Benchmark of one control-loop tick without the network: gather (DB) → allocate → plan → record.

Builds a site of N chargers with running sessions and recent meter samples in a throw-away
SQLite database (or DATABASE_URL if set), then times the tick's database and engine work.
Sending profiles is left out: it is bounded by the chargers' answer times, and all sends of
a tick run concurrently.

    python bench/bench_tick.py [--chargers 250 1000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
_tmp = tempfile.mkdtemp(prefix="evce-bench-")
os.environ.setdefault("EVCE_DATA_DIR", _tmp)
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_tmp}/bench.sqlite3")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evce.settings")
os.environ.setdefault("LOG_LEVEL", "warning")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from chargers.models import Charger  # noqa: E402
from loadmgmt import apply, engine, inputs, safety  # noqa: E402
from loadmgmt.models import Zone  # noqa: E402
from transactions.models import MeterSample, Transaction  # noqa: E402


def build_site(chargers: int, now: dt.datetime) -> None:
    Zone.objects.filter(parent__isnull=False).delete()
    Zone.objects.all().delete()
    root = Zone.objects.create(name="Connection point", max_current_a=chargers * 8.0, max_power_kw=chargers * 5.0)
    boards = [Zone.objects.create(name=f"Board {b}", parent=root, max_current_a=chargers * 1.0) for b in range(19)]
    rows = [Charger(charge_point_id=f"CP-{n:05d}", registration_status="accepted", connected=True,
                    zone=boards[n % len(boards)], rated_max_current_a=32, phases=3 if n % 4 else 1,
                    supply_phase=1 + n % 3) for n in range(chargers)]
    Charger.objects.bulk_create(rows)
    saved = list(Charger.objects.all())
    Transaction.objects.bulk_create([Transaction(charger=c, connector_id=1, id_tag=f"T{c.pk}", meter_start_wh=0,
                                                 start_time=now - dt.timedelta(minutes=c.pk % 300))
                                     for c in saved])
    samples = []
    for tx in Transaction.objects.all():
        for phase in ("L1", "L2", "L3"):
            samples.append(MeterSample(charger_id=tx.charger_id, connector_id=1, transaction=tx, timestamp=now,
                                       measurand="Current.Import", phase=phase, value=12.0, raw_value="12.0"))
        samples.append(MeterSample(charger_id=tx.charger_id, connector_id=1, transaction=tx, timestamp=now,
                                   measurand="Energy.Active.Import.Register", value=5000.0, raw_value="5000"))
    MeterSample.objects.bulk_create(samples, batch_size=2000)


def time_tick(now: dt.datetime) -> dict[str, float]:
    started = time.perf_counter()
    gathered = inputs.gather(now)
    t_gather = time.perf_counter()
    allocation = engine.allocate([z.zone for z in gathered.zones], gathered.sessions, gathered.policy,
                                 now.timestamp())
    t_allocate = time.perf_counter()
    safe = safety.safe_defaults(gathered.zone_rows, gathered.chargers, gathered.settings)
    commands = apply.plan(gathered, allocation, safe, now)
    for command in commands:
        command.status = "Accepted"
    t_plan = time.perf_counter()
    apply.record(gathered, allocation, commands, now)
    t_record = time.perf_counter()
    return {"gather": t_gather - started, "allocate": t_allocate - t_gather, "plan": t_plan - t_allocate,
            "record": t_record - t_plan, "total": t_record - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chargers", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    print(f"{'chargers':>8} {'phase':>9} {'median ms':>10} {'max ms':>8}")
    for count in args.chargers:
        Transaction.objects.all().delete()
        Charger.objects.all().delete()  # cascades to samples, setpoints and applied limits
        now = dt.datetime.now(dt.UTC)
        build_site(count, now)
        first = time_tick(now)  # sends every profile once: the steady state sends only changes
        runs = [time_tick(now) for _ in range(args.repeat)]
        print(f"{count:>8} {'1st tick':>9} {first['total'] * 1000:>10.1f} {'':>8}")
        for phase in ("gather", "allocate", "plan", "record", "total"):
            values = [run[phase] * 1000 for run in runs]
            print(f"{count:>8} {phase:>9} {statistics.median(values):>10.1f} {max(values):>8.1f}")


if __name__ == "__main__":
    main()
