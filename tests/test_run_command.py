"""The README's run command starts the system from a clean data directory (so it never rots)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BASE_DIR, wait_for_port
from tests.embedded_services import free_port
from tests.ocpp_sim import ChargerSim


def start_run_command(data_dir: Path, port: int, **extra: str) -> subprocess.Popen[bytes]:
    """bin/run on its own data dir; the embedded default unless DATABASE_URL / REDIS_URL are in `extra`."""
    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        EVCE_DATA_DIR=str(data_dir), PORT=str(port), EMBEDDED_REDIS_PORT=str(free_port()),
        EVCE_VENV=str(Path(sys.executable).parent.parent), OCPP_UNKNOWN_CHARGERS="accept",
        BIND_ADDRESS="127.0.0.1", ADMIN_PASSWORD="a-long-test-password", **extra,
    )
    return subprocess.Popen([str(BASE_DIR / "bin" / "run")], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=40)
    return process.returncode, output.decode(errors="replace")


def boot_once(port: int) -> str:
    sim = ChargerSim(f"ws://127.0.0.1:{port}", "CP-RUN").connect()
    try:
        return sim.boot().status
    finally:
        sim.close()


def test_the_run_command_starts_everything_twice_and_stops_cleanly(tmp_path):
    port = free_port()
    for attempt in range(2):  # the second start must work on the same data (idempotent)
        process = start_run_command(tmp_path, port)
        try:
            wait_for_port(port, process, timeout_s=90)
            assert boot_once(port) == "Accepted"
        finally:
            code, output = stop(process)
        assert code == 0, output
        assert "OCPP endpoint:" in output
        assert ("admin account created" in output) == (attempt == 0), output
    assert (tmp_path / "evce.sqlite3").exists()
    assert_port_free(port)


def assert_port_free(port: int) -> None:
    """Daphne is gone: the port can be bound again (TIME_WAIT allowed)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


@pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"),
                    reason="needs DATABASE_URL pointing at PostgreSQL (CI's second run sets it)")
def test_the_run_command_uses_postgresql_and_redis_when_given(tmp_path):
    port = free_port()
    process = start_run_command(tmp_path, port, DATABASE_URL=os.environ["DATABASE_URL"],
                                REDIS_URL=os.environ["REDIS_URL"])
    try:
        wait_for_port(port, process, timeout_s=90)
        assert boot_once(port) == "Accepted"
    finally:
        code, output = stop(process)
    assert code == 0, output
    assert "embedded Redis" not in output
    assert not (tmp_path / "evce.sqlite3").exists()
