"""bench/bench_start.py at one run: a start is timed to the server's first answer, for both servers.

Not a timed test: it checks the measurement (a started server, its answer, the stop after it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_scale  # noqa: E402 - the benchmark lives in bench/
import bench_start  # noqa: E402


class ProjectEnvironment:
    """What `bench_scale.Server` asks of a backend: the project's environment (here the test database's)."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env

    def env(self, **extra: str) -> dict[str, str]:
        return {**self._env, **extra}


def test_each_start_is_timed_to_its_first_answer_and_the_server_is_stopped_after(servers, transactional_db):
    project = bench_scale.Server("project", ProjectEnvironment(servers.env))  # type: ignore[arg-type]
    bare = bench_scale.Server("bare", None)

    figures = bench_start.measure({"project": project, "bare": bare}, runs=1)

    for kind in ("project", "bare"):
        assert figures[kind]["runs"] == 1
        assert 0 < figures[kind]["fastest_s"] == figures[kind]["median_s"] == figures[kind]["slowest_s"] < 60
    assert project.processes == [] and bare.processes == []  # stopped after each start
    lines = bench_start.table(figures).splitlines()
    assert lines[1].startswith("project") and lines[2].startswith("bare") and lines[3].startswith("project / bare")


def test_a_server_that_never_answers_is_reported_and_stopped():
    class Silent(bench_scale.Server):
        def start(self) -> None:  # listens nowhere: nothing is ever answered
            self.processes = []

    silent: Any = Silent("bare", None)
    try:
        bench_start.first_answer_s(silent, timeout_s=0.3)
    except RuntimeError as error:
        assert "did not answer" in str(error)
    else:
        raise AssertionError("a silent server was timed")
