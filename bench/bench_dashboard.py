"""Benchmark of what one open dashboard page costs the server per live poll.

Builds a site of N chargers (each with a running session, fresh meter samples and the loop's
live state) in a throw-away SQLite database (or DATABASE_URL if set), then times what the
live consumer does for the overview: every second, read every tile (shared by all pages of a
process) and render the ones whose data changed (all of them only for the connect snapshot);
every three seconds, the zone tree with the loop's capacities (loadmgmt.inputs.gather).

    python bench/bench_dashboard.py [--chargers 50 250] [--repeat 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

from throwaway import setup_django  # beside this script: the project on the path, a throw-away database

setup_django()

from django.core.management import call_command  # noqa: E402
from django.template.loader import render_to_string  # noqa: E402

from chargers.models import Charger, Connector  # noqa: E402
from dashboard import selectors  # noqa: E402
from loadmgmt.models import LimitState, Zone  # noqa: E402
from transactions.models import MeterSample, Transaction  # noqa: E402


def build_site(chargers: int, now: dt.datetime) -> None:
    for model in (MeterSample, LimitState, Transaction, Connector, Charger):
        model.objects.all().delete()
    Zone.objects.filter(parent__isnull=False).delete()
    Zone.objects.all().delete()
    root = Zone.objects.create(name="Connection point", max_current_a=chargers * 8.0, max_power_kw=chargers * 5.0)
    boards = [Zone.objects.create(name=f"Board {b}", parent=root, max_current_a=chargers * 1.0) for b in range(19)]
    Charger.objects.bulk_create([
        Charger(charge_point_id=f"CP-{n:05d}", registration_status="accepted", connected=True,
                zone=boards[n % len(boards)], phases=3 if n % 4 else 1, supply_phase=1 + n % 3)
        for n in range(chargers)])
    saved = list(Charger.objects.all())
    Connector.objects.bulk_create([Connector(charger=c, connector_id=1, status="Charging", status_at=now)
                                   for c in saved])
    Transaction.objects.bulk_create([Transaction(charger=c, connector_id=1, id_tag=f"T{c.pk}", meter_start_wh=0,
                                                 energy_wh=5000, start_time=now - dt.timedelta(minutes=30),
                                                 last_sample_at=now) for c in saved])
    samples, states = [], []
    for tx in Transaction.objects.all():
        for minute in range(30):  # half an hour of history at one sample a minute: the index must do its job
            at = now - dt.timedelta(minutes=minute)
            for phase in ("L1", "L2", "L3"):
                samples.append(MeterSample(charger_id=tx.charger_id, connector_id=1, transaction=tx, timestamp=at,
                                           measurand="Current.Import", phase=phase, value=12.0, raw_value="12"))
            samples.append(MeterSample(charger_id=tx.charger_id, connector_id=1, transaction=tx, timestamp=at,
                                       measurand="Power.Active.Import", value=8280.0, raw_value="8280"))
        states.append(LimitState(charger_id=tx.charger_id, connector_id=1, purpose="TxProfile", transaction_id=tx.pk,
                                 in_force_a=12.0, wanted_a=12.0, binding="zone:Board 3 phase L1"))
    MeterSample.objects.bulk_create(samples, batch_size=5000)
    LimitState.objects.bulk_create(states)


def timed(function, repeat: int) -> list[float]:
    durations = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        durations.append((time.perf_counter() - started) * 1000)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chargers", type=int, nargs="+", default=[50, 250])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    now = dt.datetime.now(dt.UTC)
    for count in args.chargers:
        build_site(count, now)

        tiles = selectors.charger_tiles(now=now)

        def read() -> None:
            selectors.charger_tiles(now=now)

        def render(tiles: list[selectors.ChargerTile] = tiles) -> None:
            for tile in tiles:
                render_to_string("dashboard/_tile.html", {"tile": tile})

        def zones(tiles: list[selectors.ChargerTile] = tiles) -> None:
            selectors.zone_views(now=now, tiles=tiles)

        for label, function in (("read all tiles (every poll)", read),
                                ("render all tiles (snapshot only)", render),
                                ("zone tree + capacities (every 3 s)", zones)):
            durations = timed(function, args.repeat)
            print(f"{count:5d} chargers  {label:36s} median {statistics.median(durations):7.1f} ms"
                  f"  max {max(durations):7.1f} ms")


if __name__ == "__main__":
    main()
