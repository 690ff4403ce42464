"""What a web process would otherwise load on its first charger's frames, loaded as it starts.

Several libraries import most of themselves on first use: Celery builds its task machinery
(canvas, result backends, kombu's Redis transport) on the first `apply_async` — the re-balance
a first StartTransaction asks for —, the process inbox imports channels-redis on the first
websocket, and redis-py the IDNA codec on its first connection. Measured on one Daphne process
(bench probe, tracemalloc): ~2.8 MB of Python objects and ~4 MB of RSS arrived with the
first charger, the first charger's boot waited on those imports, and a fleet of 250 was charged
16 KB each for memory every process needs anyway. Loaded here, before `gctune.tune` freezes
what exists at start, they are also kept out of the collector's full passes.

Nothing here connects anywhere: a web process must start while Redis is still coming up.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pprint
import sys

logger = logging.getLogger(__name__)

# Modules first used on a charger's frames (found with tracemalloc on a started process).
FIRST_USE_MODULES = (
    "encodings.idna",  # redis-py encodes the host name of its first connection
    "channels_redis.core",
    "channels_redis.serializers",
    "celery.canvas",
    "celery.result",
    "celery.backends.base",
    "celery.contrib.django.task",
    "celery.app.events",  # the re-balance request's first send (found by a sys.modules diff, idle → first charger)
    "celery.events",
    "celery.events.receiver",
    "kombu.transport.redis",
    "kombu.transport.virtual",
    "transactions.services",
    "badges.local_list",
    "chargers.configuration",
    "loadmgmt.tasks",
)


def warm_up() -> None:
    """Import the first-use modules and finalize the Celery app (its tasks bound, its AMQP
    helper built, the broker's transport class resolved) without opening a connection."""
    for name in FIRST_USE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional backend not installed: loaded on first use, as before
            logger.debug("warm-up: %s not importable", name)
    from kombu.transport import resolve_transport

    from evce.celery import app

    app.finalize(auto=True)
    app.amqp  # noqa: B018 - built on first access: the producer machinery a task send needs
    resolve_transport(app.conf.broker_url.split("://", 1)[0] if app.conf.broker_url else "redis")
    defer_autobahn_debug_format()


class LazyPformat:
    """`pprint.pformat(value)`, done only if the text is wanted (a log line that is written)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def defer_autobahn_debug_format() -> bool:
    """Make autobahn's per-connection debug line format only when debug logging is on.

    Each websocket's `_connectionMade` builds a debug line of its 29 settings with
    `pformat(...)` before asking the logger, which then drops it: 0.13 ms of the event loop per
    connection (~4 % of a connect's CPU; 16 % of the event loop's samples in a 1,000-charger
    reconnect storm, py-spy). The text, when a debug log does want it, is the same. False when
    autobahn no longer looks this up (its code changed): nothing is patched then.
    """
    try:
        from autobahn.websocket import protocol
    except ImportError:
        return False
    if getattr(protocol, "pformat", None) is not pprint.pformat:
        return False
    protocol.pformat = LazyPformat  # type: ignore[assignment]
    return True


def open_database_when_running() -> bool:
    """Under Daphne, once its event loop runs: open the database connection on the database
    thread and read one row, as the first charger's handshake would.

    The first charger otherwise paid for all of it: the database thread and its malloc arena,
    the connection, the SQL library's code paged in (~2 MB of one process's RSS, smaps, SQLite;
    the handshake waited for it). Done in the background: a database still coming up is met
    again by the first charger, as before. False when there is no reactor (in-process ASGI).
    """
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return False
    reactor.callWhenRunning(lambda: asyncio.ensure_future(_open_database()))
    return True


async def _open_database() -> None:
    from channels.db import database_sync_to_async

    try:
        await database_sync_to_async(_read_one_charger)()
    except Exception:  # noqa: BLE001 - not reachable yet: the first charger's frame connects
        logger.debug("warm-up: database not reachable yet", exc_info=True)


def _read_one_charger() -> None:
    from chargers.models import Charger

    Charger.objects.only("pk").first()


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas (what MALLOC_ARENA_MAX does), before the process starts threads.

    glibc gives each new thread an arena of its own: a Daphne process's database thread and
    executor threads each kept 0.4–0.8 MB of mostly idle heap (smaps of a started process
    after its first charger). The threads hold the GIL while they allocate Python objects,
    so sharing few arenas costs them nothing measurable. Not glibc (musl, macOS): nothing done.
    A MALLOC_ARENA_MAX in the environment wins: glibc read it at start.
    """
    import ctypes
    import ctypes.util
    import os

    if arenas < 1 or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
