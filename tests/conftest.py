"""Shared fixtures: real Daphne servers on loopback ports, simulated chargers, helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.embedded_services import free_port
from tests.meters_lab import MeterLab
from tests.ocpp_sim import ChargerSim

BASE_DIR = Path(__file__).resolve().parent.parent

# Modules that load the whole machine or measure time against it: a fleet of hundreds of
# simulated chargers, a boot or password storm, the run command's whole system, Chromium, a
# Redis outage, Celery workers racing for the loop's lease. `bin/test` runs them alone, after
# the rest of the suite has run on two workers: beside another worker's tests their deadlines
# would measure the neighbour, not the code.
SOLO_MODULES = frozenset({
    "test_bench_ocpp", "test_bench_scale", "test_dashboard_browser", "test_faults_redis",
    "test_loadmgmt_loop", "test_loop_integration", "test_loop_scenarios", "test_meters_loop_e2e",
    "test_ocpp_boot_storm", "test_ocpp_hardening", "test_run_command", "test_scale_out",
    "test_simulator_charger",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in SOLO_MODULES:
            item.add_marker(pytest.mark.solo)


def database_url_of(settings_dict: dict[str, Any]) -> str:
    """The DATABASE_URL that points another process at the test database."""
    if settings_dict["ENGINE"] in {"evce.sqlite", "django.db.backends.sqlite3"}:
        return f"sqlite:///{settings_dict['NAME']}"
    user = quote(settings_dict.get("USER") or "")
    password = quote(settings_dict.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "localhost"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{settings_dict['NAME']}"


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout_s} s")


def _wait_for_worker(process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Until the worker answers a ping: a test timing its first tick must not time the worker's start."""
    from evce.celery import app

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited early with status {process.returncode}")
        if app.control.ping(timeout=0.5):
            return
    raise RuntimeError(f"celery worker not answering after {timeout_s} s")


class ServerPool:
    """Starts real server processes against the test database, one per configuration."""

    def __init__(self, database_url: str) -> None:
        # Every test connects from 127.0.0.1: the per-address limits (failed logins, new ids) would
        # couple unrelated tests; the tests of those limits start a server with their own values.
        self.env = dict(os.environ, DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE="evce.settings",
                        HTTPS="false", LOG_LEVEL="warning", OCPP_LOGIN_FAILURES_PER_ADDRESS="1000000",
                        OCPP_REGISTRATIONS_PER_ADDRESS="1000000")
        self._daphnes: dict[tuple[tuple[str, str], ...], str] = {}
        self._daphne_processes: dict[str, subprocess.Popen[bytes]] = {}
        self._processes: list[subprocess.Popen[bytes]] = []

    def daphne(self, **overrides: str) -> str:
        key = tuple(sorted(overrides.items()))
        if key not in self._daphnes:
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "evce.asgi:application"],
                cwd=BASE_DIR, env={**self.env, **overrides},
            )
            self._processes.append(process)
            wait_for_port(port, process)
            self._daphnes[key] = f"ws://127.0.0.1:{port}"
            self._daphne_processes[self._daphnes[key]] = process
        return self._daphnes[key]

    def process_of(self, url: str) -> subprocess.Popen[bytes]:
        """The Daphne process serving `url` (from `daphne`)."""
        return self._daphne_processes[url]

    def celery_worker(self, **overrides: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "evce", "worker", "-l", "warning", "--pool", "solo",
             "--without-mingle", "--without-gossip"],
            cwd=BASE_DIR, env={**self.env, **overrides},
        )
        self._processes.append(process)
        _wait_for_worker(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """End one server now (a Celery worker left running would take later tests' queued ticks)."""
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        self._processes.remove(process)
        for url in [url for url, served_by in self._daphne_processes.items() if served_by is process]:
            del self._daphne_processes[url]
            for key in [key for key, known in self._daphnes.items() if known == url]:
                del self._daphnes[key]  # asked again, the configuration starts a new process

    def stop_all(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def servers(django_db_setup: None, django_db_blocker: Any) -> Iterator[ServerPool]:
    from django.db import connection

    pool = ServerPool(database_url_of(connection.settings_dict))
    yield pool
    pool.stop_all()


@pytest.fixture
def celery_worker(servers: ServerPool) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts Celery workers for one test and stops them after it.

    A worker outliving its test would run the ticks later tests queue (an answer's re-balance
    request) on the real clock, next to the ticks those tests run on their own clock.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(**overrides: str) -> subprocess.Popen[bytes]:
        started.append(servers.celery_worker(**overrides))
        return started[-1]

    yield start
    for process in started:
        servers.stop(process)


@pytest.fixture
def ocpp_url(servers: ServerPool, transactional_db: None) -> str:
    """A running Daphne with the default policy for unknown chargers (pending)."""
    return servers.daphne()


@pytest.fixture
def charger_factory() -> Iterator[Callable[..., ChargerSim]]:
    sims: list[ChargerSim] = []

    def make(url: str, cp_id: str, **kwargs: Any) -> ChargerSim:
        sim = ChargerSim(url, cp_id, **kwargs)
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        sim.close()
    _wait_for_disconnects([sim.cp_id for sim in sims])


@pytest.fixture
def accepted_charger(ocpp_url: str, charger_factory: Callable[..., ChargerSim]) -> Callable[[str], ChargerSim]:
    """Make an accepted charger, connect it and boot it: the usual start of an OCPP test."""
    from chargers.models import Charger, RegistrationStatus

    def make(cp_id: str) -> ChargerSim:
        Charger.objects.create(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED)
        sim = charger_factory(ocpp_url, cp_id).connect()
        sim.boot()
        return sim

    return make


@pytest.fixture
def lab() -> Iterator[MeterLab]:
    """Fake Modbus meters served from a background loop (see tests.meters_lab)."""
    lab = MeterLab()
    yield lab
    lab.close()


def _wait_for_disconnects(cp_ids: list[str]) -> None:
    """Let the server record the disconnects before the database is flushed under it."""
    from chargers.models import Charger

    try:
        wait_until(lambda: not Charger.objects.filter(charge_point_id__in=cp_ids, connected=True).exists(),
                   timeout_s=5)
    except AssertionError:
        pass  # the flush that follows resets the table anyway


@pytest.fixture(autouse=True)
def _loop_gate_cleared() -> Iterator[None]:
    """Leave no control-loop key in Redis for the next test of this worker (its Redis database
    outlives the test): a gate set under a 60 s loop period held back every periodic tick of a
    loop scenario that ran next on the same worker, which then waited for a cap that never came."""
    yield
    import redis

    from loadmgmt import tasks

    try:
        tasks._redis().delete(tasks.GATE_KEY, tasks.LOCK_KEY, tasks.REQUEST_KEY, tasks.QUEUED_KEY)
    except redis.RedisError:
        pass  # a test that took Redis away: nothing of the loop's can be left there either


@pytest.fixture(autouse=True, scope="session")
def _flush_retries_on_deadlock() -> Iterator[None]:
    """Retry the between-tests flush when PostgreSQL picks it as a deadlock victim.

    A Daphne server process may still finish a write (a boot step, a disconnect) while the test
    process truncates every table; TRUNCATE then deadlocks with the server's row locks. The
    product never truncates; only this test cleanup needs the retry.
    """
    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    original = flush.Command.handle

    def handle(self: Any, *args: Any, **options: Any) -> Any:
        for attempt in range(5):
            try:
                return original(self, *args, **options)
            except CommandError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        return None

    flush.Command.handle = handle
    yield
    flush.Command.handle = original


def wait_until(predicate: Callable[[], Any], timeout_s: float = 10, interval_s: float = 0.05) -> Any:
    """Poll `predicate` until it is truthy: for effects that cross a process boundary."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)
