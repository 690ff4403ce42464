"""``manage.py simulate_fleet`` runs a small fleet against a server and prints its summary."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command

from simulator.central import MiniCentral
from simulator.management.commands.simulate_fleet import parse_arrivals

pytestmark = pytest.mark.slow

@pytest.fixture
def central() -> Iterator[MiniCentral]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = MiniCentral()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_it_runs_a_fleet_and_prints_summaries(central):
    out = io.StringIO()
    call_command("simulate_fleet", url=central.url, chargers=4, arrivals="burst", duration=1.0,
                 summary_every=0.5, capacity_a=200, misbehave_every=4, stdout=out)
    text = out.getvalue()
    assert "4 chargers booted" in text
    assert "online 4/4  sessions 4" in text
    assert "0 breaches" in text
    assert len(central.actions("SIM-001", "StartTransaction")) == 1


@pytest.mark.parametrize(("text", "interval"), [("burst", 0.0), ("every:2.5", 2.5), ("3", 3.0)])
def test_it_parses_arrival_plans(text, interval):
    assert parse_arrivals(text) == interval


def test_it_refuses_a_bad_arrival_plan():
    with pytest.raises(CommandError, match="--arrivals"):
        parse_arrivals("sometimes")
