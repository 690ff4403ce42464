"""bench/bench_tick.py at a small N: it builds its site (with the sessions' past when asked),
converges, cuts a limit and writes its figures. Run as the README runs it, in a process of its
own on a throw-away database: it replaces the loop's hand-over and deletes every session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_tick_benchmark_runs_on_a_site_whose_sessions_have_a_past(tmp_path: Path) -> None:
    out = tmp_path / "tick.json"
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DATABASE_URL", "EVCE_"))}
    env.update(EVCE_DATA_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path}/tick.sqlite3", LOG_LEVEL="warning")
    subprocess.run([sys.executable, str(ROOT / "bench" / "bench_tick.py"), "--chargers", "12", "--repeat", "1",
                    "--history-minutes", "3", "--period", "60", "--json", str(out)],
                   env=env, cwd=tmp_path, check=True, capture_output=True, timeout=120)
    figures = json.loads(out.read_text())["12"]
    assert figures["converge_ticks"] >= 1
    assert figures["cut_sent"] > 0 and figures["cut_handed_over_ms"] > 0
    assert figures["total_median_ms"] > 0 and figures["gather_median_ms"] > 0
    # Sessions started 0-11 minutes ago, a MeterValues (5 samples) each minute of the last 3.
    expected = sum(5 * (min(3, age) + 1) for age in range(1, 13))
    assert figures["meter_samples"] == expected
