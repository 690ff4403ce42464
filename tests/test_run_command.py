"""The README's run command starts the system from a clean data directory (so it never rots)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def read_state(data_dir: Path, process: subprocess.Popen[bytes], timeout_s: float = 30) -> dict[str, Any]:
    """The launcher's run.json, written once every child started (the shared socket of several
    Daphne processes listens a moment before)."""
    deadline = time.monotonic() + timeout_s
    while not (data_dir / "run.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is not None:
        raise AssertionError(f"the run command exited with {process.returncode}: {stop(process)[1]}")
    return dict(json.loads((data_dir / "run.json").read_text()))


def stop(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    with contextlib.suppress(ProcessLookupError):  # already exited: its output is still to be read
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
        assert "Traceback" not in output and "WorkerLostError" not in output, output
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


def manage(data_dir: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """A management command from "another shell": only EVCE_DATA_DIR in common with bin/run."""
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "EMBEDDED_REDIS_PORT"}}
    env.update(EVCE_DATA_DIR=str(data_dir), HTTPS="false", **extra)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True,
                          text=True, timeout=60)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie awaiting its parent's wait() is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_one_instance_per_data_dir_found_by_other_shells_and_ended_by_sighup(tmp_path):

    port = free_port()
    process = start_run_command(tmp_path, port)
    sim = None
    try:
        wait_for_port(port, process, timeout_s=90)
        state = read_state(tmp_path, process)
        web = {name for name in state["children"] if name.startswith("daphne")}  # one per core (WEB_PROCESSES)
        assert set(state["children"]) - web == {"redis", "worker", "beat"} and web
        # A second start on the same data directory says so and leaves the first alone.
        second = start_run_command(tmp_path, free_port())
        output, _ = second.communicate(timeout=60)
        assert second.returncode == 1
        assert f"already running from {tmp_path}" in output.decode() and str(process.pid) in output.decode()
        # ocpp_call from another shell finds the embedded Redis on its random port.
        sim = ChargerSim(f"ws://127.0.0.1:{port}", "CP-SHELL").connect()
        sim.boot()
        answer = manage(tmp_path, "ocpp_call", "CP-SHELL", "ClearCache")
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout) == {"status": "Accepted"}
        # Told the wrong port, it says what to set, in one line, without a traceback.
        wrong = manage(tmp_path, "ocpp_call", "CP-SHELL", "ClearCache", EMBEDDED_REDIS_PORT=str(free_port()))
        assert wrong.returncode == 1
        assert "Traceback" not in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
        assert "cannot reach Redis" in wrong.stderr and "EVCE_DATA_DIR" in wrong.stderr
    finally:
        if sim is not None:
            sim.close()
        os.kill(process.pid, signal.SIGHUP)  # the terminal closed: only the launcher gets it
        output, _ = process.communicate(timeout=40)
    assert process.returncode == 0, output.decode(errors="replace")
    assert "SIGHUP received" in output.decode(errors="replace")
    assert not [name for name, pid in state["children"].items() if pid_alive(pid)]
    assert not (tmp_path / "run.json").exists()
    assert_port_free(port)


def test_children_do_not_outlive_a_killed_launcher(tmp_path):

    from tests.conftest import wait_until

    port = free_port()
    process = start_run_command(tmp_path, port)
    try:
        wait_for_port(port, process, timeout_s=90)
        children = read_state(tmp_path, process)["children"]
    finally:
        os.kill(process.pid, signal.SIGKILL)  # no handler runs: the parent-death signal must do it
        process.communicate(timeout=10)
    wait_until(lambda: not [pid for pid in children.values() if pid_alive(pid)], timeout_s=30, interval_s=0.2)
    # The lock went with the launcher: the next start works.
    restarted = start_run_command(tmp_path, port)
    try:
        wait_for_port(port, restarted, timeout_s=90)
    finally:
        code, output = stop(restarted)
    assert code == 0, output


def test_several_web_processes_share_the_port_and_every_one_serves_chargers(tmp_path):
    """WEB_PROCESSES=2: two Daphne processes accept from one socket; chargers land on both, and a
    server call from another shell reaches a charger whichever process holds it."""

    port = free_port()
    # Until the second process has started, the first accepts every connection: more than the
    # per-address registration limit (10 a minute per process) may be needed to reach both.
    process = start_run_command(tmp_path, port, WEB_PROCESSES="2", OCPP_REGISTRATIONS_PER_ADDRESS="1000")
    sims: list[ChargerSim] = []
    try:
        wait_for_port(port, process, timeout_s=90)
        state = read_state(tmp_path, process)
        assert set(state["children"]) == {"redis", "daphne-1", "daphne-2", "worker", "beat"}
        daphnes = {state["children"]["daphne-1"], state["children"]["daphne-2"]}
        served_by: set[int] = set()
        deadline = time.monotonic() + 60
        while served_by != daphnes and time.monotonic() < deadline:  # the kernel picks; a few connections do
            sim = ChargerSim(f"ws://127.0.0.1:{port}", f"CP-WEB-{len(sims)}").connect()
            sims.append(sim)
            assert sim.boot().status == "Accepted"
            served_by |= {pid for pid in daphnes if _holds_connection_from(pid, sim.ws.local_address[1])}
        assert served_by == daphnes
        for sim in sims[:2]:
            answer = manage(tmp_path, "ocpp_call", sim.cp_id, "ClearCache")
            assert answer.returncode == 0, answer.stderr
            assert json.loads(answer.stdout) == {"status": "Accepted"}
    finally:
        for sim in sims:
            sim.close()
        code, output = stop(process)
    assert code == 0, output
    assert_port_free(port)


def _holds_connection_from(pid: int, client_port: int) -> bool:
    """Whether process `pid` has the server end of the TCP connection from 127.0.0.1:`client_port`."""
    import psutil

    return any(c.raddr and c.raddr.port == client_port for c in psutil.Process(pid).net_connections(kind="tcp"))


_PARENT_WITH_A_POOL = """
import os, signal, subprocess, sys, time
record = sys.argv[1]
child = subprocess.Popen([sys.executable, "-c", '''
import signal, sys, time
record = sys.argv[1]
def told(kind):
    def handler(*_):
        open(record, "a").write(kind + "\\\\n")
        sys.exit(0)
    return handler
signal.signal(signal.SIGTERM, told("pool process: SIGTERM from outside"))
signal.signal(signal.SIGUSR1, told("pool process: ended by its parent"))
open(record, "a").write("ready\\\\n")
while True:
    time.sleep(0.05)
''', record])
def stop(*_):
    child.send_signal(signal.SIGUSR1)  # a warm shutdown: the parent ends its own pool
    child.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(0.05)
"""


def test_a_stop_lets_each_child_end_its_own_processes(tmp_path):
    """The launcher signals each child, not the child's whole process group: a Celery worker
    then ends its pool itself (warm shutdown) instead of its pool processes being killed under
    their running task (WorkerLostError). Here a child with a pool process of its own."""
    from evce import launcher

    record = tmp_path / "record"
    child = subprocess.Popen([sys.executable, "-c", _PARENT_WITH_A_POOL, str(record)], start_new_session=True)
    deadline = time.monotonic() + 20
    while not (record.exists() and "ready" in record.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)

    launcher._stop([("worker", child)])

    assert child.returncode == 0
    assert record.read_text().splitlines() == ["ready", "pool process: ended by its parent"]
