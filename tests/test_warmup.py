"""evce.warmup: what a web process loads and caps as it starts, before its first charger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    for name in ("celery.canvas", "kombu.transport.redis", "channels_redis.core", "encodings.idna"):
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
