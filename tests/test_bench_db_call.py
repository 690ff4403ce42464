"""bench/bench_db_call.py at a small N: both ways of a database call are timed, on the database
the environment names, and the health check's window is left as the project sets it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_database_call_benchmark_times_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "call.json"
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DATABASE_URL", "EVCE_"))}
    env.update(EVCE_DATA_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path / 'call.sqlite3'}", LOG_LEVEL="warning")
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_db_call.py"), "--calls", "20", "--rounds", "2",
                          "--json", str(out)], env=env, cwd=tmp_path, check=True, capture_output=True, text=True,
                         timeout=120)
    report = json.loads(out.read_text())
    assert report["backend"] == "sqlite" and report["calls"] == 20
    assert set(report["results"]) == {"health check before every call",
                                      "health check after a quiet second (evce.postgresql)"}
    assert all(figures["wall_us"] > 0 and figures["client_us"] > 0 for figures in report["results"].values())
    assert "per call (median)" in run.stdout
