"""evce.warmup: what a web process loads and caps as it starts, before its first charger."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from evce import warmup

BASE_DIR = Path(__file__).resolve().parent.parent

PROBE = """
import json, socket, sys
import django
django.setup()
opened = []
real_connect = socket.socket.connect
def connect(self, address):
    opened.append(str(address))
    return real_connect(self, address)
socket.socket.connect = connect
before = set(sys.modules)
from evce import warmup
warmup.warm_up()
from evce.celery import app
print(json.dumps({"loaded": sorted(set(sys.modules) - before), "finalized": app.finalized, "opened": opened}))
"""


def test_warm_up_loads_the_first_use_modules_without_connecting_anywhere():
    # Redis on a port nothing listens on: starting a web process must not need it.
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="evce.settings", REDIS_URL="redis://127.0.0.1:9/0")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=BASE_DIR, env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = set(report["loaded"])
    for name in ("celery.canvas", "celery.app.events", "kombu.transport.redis", "channels_redis.core",
                 "encodings.idna"):
        assert name in loaded
    assert report["finalized"] is True
    assert report["opened"] == []


def test_every_first_use_module_exists():
    # A renamed module would silently drop out of the warm-up (an ImportError is tolerated there).
    import importlib.util

    missing = [name for name in warmup.FIRST_USE_MODULES if importlib.util.find_spec(name) is None]
    assert missing == []


def test_the_arena_cap_yields_to_the_environment_and_to_zero(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert warmup.limit_malloc_arenas(2) is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert warmup.limit_malloc_arenas(0) is False


def test_the_arena_cap_is_set_through_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: the cap is a no-op there")
    code = ("import os; os.environ.pop('MALLOC_ARENA_MAX', None); from evce import warmup; "
            "print(warmup.limit_malloc_arenas(2))")
    out = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.strip() == "True"


def test_autobahns_per_connection_debug_line_is_formatted_only_when_written(monkeypatch):
    import pprint

    from autobahn.websocket import protocol

    monkeypatch.setattr(protocol, "pformat", pprint.pformat)
    assert warmup.defer_autobahn_debug_format() is True
    assert warmup.defer_autobahn_debug_format() is False  # already deferred: left as it is
    settings = [("openHandshakeTimeout", 5, "Factory"), ("autoPingInterval", 0, "Factory")]
    deferred = protocol.pformat(settings)
    assert isinstance(deferred, warmup.LazyPformat) and deferred.value is settings  # nothing formatted yet
    # txaio formats the line with str.format, as here
    assert "\n{attrs}".format(attrs=deferred) == "\n" + pprint.pformat(settings)  # noqa: UP032


def test_the_patch_leaves_an_autobahn_that_no_longer_formats_this_way(monkeypatch):
    from autobahn.websocket import protocol

    monkeypatch.delattr(protocol, "pformat")
    assert warmup.defer_autobahn_debug_format() is False


class FakeReactor:
    def __init__(self) -> None:
        self.when_running: list[Any] = []

    def callWhenRunning(self, callback: Any) -> None:  # noqa: N802 - Twisted's name
        self.when_running.append(callback)


def test_without_a_reactor_the_database_is_left_to_the_first_charger(monkeypatch):
    monkeypatch.delitem(sys.modules, "twisted.internet.reactor", raising=False)
    assert warmup.open_database_when_running() is False


@pytest.mark.django_db(transaction=True)
def test_once_running_the_database_is_read_on_the_database_thread(monkeypatch):
    """The read runs where the chargers' frames will run theirs, so that thread's connection is open."""
    from channels.db import database_sync_to_async

    reactor = FakeReactor()
    monkeypatch.setitem(sys.modules, "twisted.internet.reactor", reactor)
    read_on: list[int] = []
    real_read = warmup._read_one_charger

    def read() -> None:
        real_read()
        read_on.append(threading.get_ident())

    monkeypatch.setattr(warmup, "_read_one_charger", read)
    assert warmup.open_database_when_running() is True
    assert read_on == []  # nothing before the server runs

    async def server_running() -> int:
        (started,) = reactor.when_running
        await started()
        return await database_sync_to_async(threading.get_ident)()

    database_thread = asyncio.run(server_running())
    assert read_on == [database_thread]


def test_a_database_not_up_yet_does_not_stop_the_start(monkeypatch):
    def unreachable() -> None:
        from django.db import OperationalError

        raise OperationalError("connection refused")

    monkeypatch.setattr(warmup, "_read_one_charger", unreachable)
    asyncio.run(warmup._open_database())  # logged at debug level; the first charger connects later
