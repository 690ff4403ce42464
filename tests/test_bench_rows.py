"""bench/bench_rows.py at a small N: every way it compares writes the same rows, and each has its
figures. Run as the README runs it, in a process of its own on a throw-away SQLite database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_row_benchmark_times_each_way_on_the_same_rows(tmp_path: Path) -> None:
    out, database = tmp_path / "rows.json", tmp_path / "rows.sqlite3"
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DATABASE_URL", "EVCE_"))}
    env.update(EVCE_DATA_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{database}", LOG_LEVEL="warning")
    subprocess.run([sys.executable, str(ROOT / "bench" / "bench_rows.py"), "--rows", "4", "--batches", "3",
                    "--rounds", "2", "--json", str(out)], env=env, cwd=tmp_path, check=True, capture_output=True,
                   timeout=120)
    results = json.loads(out.read_text())["results"]
    assert set(results) == {
        "register: bulk_create", "register: insert_new", "limit rows: bulk_create", "limit rows: insert_new",
        "connections: ORM update per row", "connections: executemany", "connections: update_rows"}
    assert all(figure["client_us"] > 0 and figure["wall_us"] > 0 for figure in results.values())
    with sqlite3.connect(database) as stored:
        by_way = dict(stored.execute(
            "SELECT substr(charge_point_id, 4, 5) = 'bulk_', count(*) FROM chargers_charger GROUP BY 1").fetchall())
        limits = stored.execute("SELECT count(*) FROM loadmgmt_limitstate WHERE connector_id = 0").fetchone()[0]
        connected = stored.execute("SELECT count(*) FROM chargers_charger WHERE connected AND "
                                   "channel_name = 'c' || id AND last_seen IS NOT NULL").fetchone()[0]
    assert by_way == {0: 24, 1: 24}  # 2 rounds x 3 batches x 4 chargers, each way
    assert limits == 48 and connected == 24  # the connections written to the insert_new fleet
