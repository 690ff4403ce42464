"""Benchmark: import 10,000 badges from CSV (the `badges_import` path), then again, then export.

Runs against a fresh SQLite database in a temporary directory (or DATABASE_URL when given),
migrated first. A tenth of the badges have a group, a tenth have charger or zone rights.
Prints the time and rate of each step:

1. dry run (check every row, write nothing) of a file of new badges;
2. import of the new badges;
3. re-import of the same file (every row an update);
4. export of every badge;
5. the admin's preview (a dry run that also builds the per-row diff shown on the page).

    python bench/bench_badge_import.py                 # 10,000 badges
    python bench/bench_badge_import.py --badges 50000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere


def setup_django() -> None:
    data_dir = tempfile.mkdtemp(prefix="evce-bench-badges-")
    os.environ.setdefault("EVCE_DATA_DIR", data_dir)
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{data_dir}/bench.sqlite3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evce.settings")
    os.environ.setdefault("LOG_LEVEL", "warning")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def make_csv(count: int) -> str:
    from badges.models import BadgeGroup
    from chargers.models import Charger
    from loadmgmt.models import Zone

    for name in ("Acme", "Globex", "Fleet"):
        BadgeGroup.objects.get_or_create(name=name)
    for index in range(20):
        Charger.objects.get_or_create(charge_point_id=f"CP-{index:03d}")
    Zone.objects.get_or_create(name="Level -1", defaults={"max_current_a": 250})
    lines = ["id_tag,holder,email,reference,group,status,valid_from,valid_until,vip,parent_id_tag,chargers,zones"]
    for index in range(count):
        group = ("Acme", "Globex", "Fleet")[index % 3] if index % 10 == 0 else ""
        rights = f"CP-{index % 20:03d}|CP-{(index + 1) % 20:03d}" if index % 10 == 1 else ""
        zones = "Level -1" if index % 10 == 2 else ""
        status = "blocked" if index % 50 == 0 else "accepted"
        until = "2027-12-31" if index % 4 == 0 else ""
        lines.append(f"{index:014X},Holder {index},user{index}@example.com,E-{index},{group},{status},"
                     f",{until},{'yes' if index % 100 == 0 else 'no'},,{rights},{zones}")
    return "\n".join(lines) + "\n"


def timed(label: str, rows: int, step: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    outcome = step()
    elapsed = time.perf_counter() - started
    print(f"{label:<38} {elapsed:7.2f} s  {rows / elapsed:9.0f} rows/s")
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--badges", type=int, default=10_000)
    args = parser.parse_args()
    setup_django()
    import tablib

    from badges.models import Badge
    from badges.resources import BadgeImportResource, BadgeResource

    text = make_csv(args.badges)

    def run(resource_class: type[BadgeResource], *, dry_run: bool) -> Any:
        dataset = tablib.Dataset().load(text, format="csv")
        result = resource_class().import_data(dataset, dry_run=dry_run, use_transactions=True,
                                              rollback_on_validation_errors=True)
        if result.has_errors() or result.has_validation_errors():
            raise SystemExit(f"unexpected errors: {result.problems()[:5]} {result.file_errors()}")
        return result

    print(f"{args.badges} badges, database {os.environ['DATABASE_URL']}")
    timed("1. dry run (new badges)", args.badges, lambda: run(BadgeImportResource, dry_run=True))
    timed("2. import (new badges)", args.badges, lambda: run(BadgeImportResource, dry_run=False))
    assert Badge.objects.count() == args.badges
    result = timed("3. re-import (all updates)", args.badges, lambda: run(BadgeImportResource, dry_run=False))
    assert result.totals["update"] == args.badges
    exported = timed("4. export", args.badges, lambda: BadgeResource().export().export("csv"))
    assert len(exported.splitlines()) == args.badges + 1
    timed("5. admin preview (dry run with diff)", args.badges, lambda: run(BadgeResource, dry_run=True))


if __name__ == "__main__":
    main()
