"""Fake meters served from a background event loop, for synchronous code under test.

The poll task and the admin action run ``asyncio.run`` themselves, so the fake servers of
:mod:`tests.meters_fakes` cannot share their loop: a :class:`MeterLab` runs them on a thread of
their own. Values and misbehaviour are changed from the test thread while they serve.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from loadmgmt.models import Zone
from meters.models import Meter
from meters.registers import RegisterMap
from tests.meters_fakes import FakeMeter, FakeMeterServer, FramerName, typical_values

T = TypeVar("T")
T0 = dt.datetime(2026, 1, 5, 12, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    """T0 + seconds: tests pass explicit times instead of sleeping."""
    return T0 + dt.timedelta(seconds=seconds)


class MeterLab:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="meter-lab", daemon=True)
        self.thread.start()
        self.servers: list[FakeMeterServer] = []

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def serve(self, meters: Sequence[FakeMeter], *, framer: FramerName = "socket") -> FakeMeterServer:
        server = self.run(FakeMeterServer(meters, framer=framer).start())
        self.servers.append(server)
        return server

    def meter(self, register_map: RegisterMap, values: Mapping[str, float] | None = None, **options: Any) -> FakeMeter:
        """One fake meter on its own server (typical values unless given)."""
        fake = FakeMeter(register_map, values=typical_values(register_map) if values is None else values, **options)
        self.serve([fake])
        return fake

    def server_of(self, fake: FakeMeter) -> FakeMeterServer:
        return next(server for server in self.servers if fake in server.meters)

    def close(self) -> None:
        for server in self.servers:
            self.run(server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def make_meter(lab: MeterLab, fake: FakeMeter, name: str, **fields: Any) -> Meter:
    """A Meter row that reaches ``fake`` (fast timeout so silent meters cost little)."""
    server = lab.server_of(fake)
    settings: dict[str, Any] = {
        "name": name,
        "meter_type": fake.register_map.key,
        "transport": "rtu_over_tcp" if server.framer == "rtu" else "tcp",
        "host": server.host,
        "port": server.port,
        "unit_id": fake.unit_id,
        "timeout_s": 0.3,
    }
    settings.update(fields)
    return Meter.objects.create(**settings)


def dynamic_zone(name: str = "Car park", **fields: Any) -> Zone:
    values: dict[str, Any] = {"max_current_a": 100.0, "mode": "dynamic", "fallback_current_a": 16.0}
    values.update(fields)
    return Zone.objects.create(name=name, **values)
