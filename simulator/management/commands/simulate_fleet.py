"""``manage.py simulate_fleet``: virtual chargers with cars against a running controller.

For demos, load tests and manual checks of the control loop: N chargers connect to
``--url``, boot, and cars arrive (all at once or one every few seconds); optionally the
building meter is served on ``--meter-port`` (Modbus TCP, iEM3x5x map, unit id 1) so a Meter
row can point at it. A summary line is printed every ``--summary-every`` seconds until
Ctrl-C or ``--duration``. The chargers must be accepted by the controller (create them in
the admin, or run the server with ``OCPP_UNKNOWN_CHARGERS=accept``).

Steps:
1. build the site (chargers ``<prefix>-001``…, a mix of behaviours when ``--misbehave`` is set);
2. start it: Modbus server, websockets, BootNotification;
3. run the arrival plan while the physics and the summary run;
4. stop politely (StopTransaction is not sent: the cars simply stay, like a power cut would).

What-if mode (``--what-if office`` or ``--what-if arrivals.csv``; no server, no websockets):
replays a day of arrivals against the zones and accepted chargers in the database on a
simulated clock (``simulator.whatif``: the pure engine every ``--step`` simulated seconds) and
prints energy served, sessions shed, peaks per zone and phase against capacity and the VIP
outcome (``--json`` writes it all, per session too).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from simulator.car import CarSpec
from simulator.charger import Behaviour, ChargerSpec
from simulator.checker import Zone
from simulator.site import AsyncSite
from simulator.whatif import PROFILES, builtin_arrivals, format_report, read_arrivals, replay

MISBEHAVIOURS: tuple[Behaviour, ...] = ("slow", "silent", "rejecting")


def parse_arrivals(text: str) -> float:
    """``burst`` → 0 s between cars; ``every:5`` (or a bare number) → one car every 5 s."""
    if text == "burst":
        return 0.0
    value = text.split(":", 1)[1] if text.startswith("every:") else text
    try:
        interval = float(value)
    except ValueError as error:
        raise CommandError(f"--arrivals: expected 'burst' or 'every:SECONDS', got {text!r}") from error
    if interval < 0:
        raise CommandError("--arrivals: the interval cannot be negative")
    return interval


class Command(BaseCommand):
    """Run a simulated fleet until interrupted."""

    help = "Run N simulated OCPP 1.6 chargers with cars (and optionally the building meter) against a server."

    def add_arguments(self, parser: CommandParser) -> None:
        """Options: see the module docstring."""
        parser.add_argument("--url", help="OCPP endpoint base, e.g. ws://127.0.0.1:8000/ocpp")
        parser.add_argument("--what-if", dest="what_if", default=None,
                            help=f"replay a day against the site in the database: {'/'.join(PROFILES)} or a CSV file "
                            "(arrival,departure,energy_kwh,max_current_a,phases,vip,charger)")
        parser.add_argument("--step", type=float, default=10.0, help="what-if: simulated seconds per engine step")
        parser.add_argument("--seed", type=int, default=1, help="what-if: seed of a built-in profile")
        parser.add_argument("--date", default=None, help="what-if: the day replayed, YYYY-MM-DD (default today)")
        parser.add_argument("--json", default=None, help="what-if: write the report (per session too) here")
        parser.add_argument("--per-session", action="store_true", help="what-if: print one line per session")
        parser.add_argument("--chargers", type=int, default=20)
        parser.add_argument("--prefix", default="SIM", help="charge point ids are <prefix>-001, -002, …")
        parser.add_argument("--arrivals", default="every:2", help="'burst' or 'every:SECONDS'")
        parser.add_argument("--cars", type=int, default=None,
                            help="how many cars arrive (default: one per charger; what-if: 1.5 per charger)")
        parser.add_argument("--single-phase-every", type=int, default=0,
                            help="every Nth charger is single-phase, wired in rotation to L1/L2/L3 (0: none)")
        parser.add_argument("--misbehave-every", type=int, default=0,
                            help="every Nth charger is slow, silent or rejecting in turn (0: none)")
        parser.add_argument("--car-max-a", type=float, default=32.0)
        parser.add_argument("--car-demand-kwh", type=float, default=30.0)
        parser.add_argument("--meter-interval", type=float, default=10.0, help="MeterValues period (s)")
        parser.add_argument("--meter-port", type=int, default=None, help="serve the building meter on this port")
        parser.add_argument("--building-a", type=float, nargs=3, default=(0.0, 0.0, 0.0),
                            metavar=("L1", "L2", "L3"),
                            help="building load per phase (A) on the meter (what-if: at the root zones, seen by "
                            "dynamic zones)")
        parser.add_argument("--meter-lag", type=float, default=0.0, help="meter reports the value of N s ago")
        parser.add_argument("--capacity-a", type=float, default=None,
                            help="site capacity per phase (A): check it continuously and report breaches")
        parser.add_argument("--password", default=None, help="HTTP Basic password of every charger")
        parser.add_argument("--summary-every", type=float, default=5.0)
        parser.add_argument("--duration", type=float, default=None, help="stop after N seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        """Build, run until interrupted, stop (or replay a day, in what-if mode)."""
        if options["what_if"]:
            self.what_if(options)
            return
        if not options["url"]:
            raise CommandError("--url is required (or use --what-if)")
        if options["chargers"] < 1:
            raise CommandError("--chargers must be at least 1")
        site = self.build(options)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.run(site, options))

    def build(self, options: dict[str, Any]) -> AsyncSite:
        """The site: chargers with their quirks, the meter, the checker when a capacity is given."""
        zones = [Zone("site", capacity_a=options["capacity_a"])] if options["capacity_a"] else []
        site = AsyncSite(options["url"], zones=zones, meter_port=options["meter_port"] or 0)
        single_every, odd_every = options["single_phase_every"], options["misbehave_every"]
        for n in range(1, options["chargers"] + 1):
            single = bool(single_every) and n % single_every == 0
            behaviour: Behaviour = "normal"
            if odd_every and n % odd_every == 0:
                behaviour = MISBEHAVIOURS[(n // odd_every - 1) % len(MISBEHAVIOURS)]
            spec = ChargerSpec(
                f"{options['prefix']}-{n:03}",
                phases=1 if single else 3,
                supply_phase=("L1", "L2", "L3")[n % 3],
                behaviour=behaviour,
                meter_interval_s=options["meter_interval"],
                password=options["password"],
            )
            site.add_charger(spec, zone_id="site" if zones else None)
        if options["meter_port"]:
            site.add_meter("site", building_a=tuple(options["building_a"]), lag_s=options["meter_lag"])
        return site

    async def run(self, site: AsyncSite, options: dict[str, Any]) -> None:
        """Start, run arrivals with a periodic summary, stop."""
        interval = parse_arrivals(options["arrivals"])
        await site.start(wait_booted=False)
        if site.meter_server is not None:
            self.stdout.write(f"building meter: modbus tcp 127.0.0.1:{site.meter_server.port} unit 1 (iEM3x5x)")
        await site.wait_booted(timeout_s=120)
        self.stdout.write(f"{len(site.chargers)} chargers booted")
        car = CarSpec(max_current_a=options["car_max_a"], demand_wh=options["car_demand_kwh"] * 1000)
        cp_ids = list(site.chargers)[: options["cars"] or len(site.chargers)]
        summary = asyncio.create_task(self.summaries(site, options["summary_every"]))
        try:
            arrivals = asyncio.create_task(site.arrivals(cp_ids, interval_s=interval, car=car))
            if options["duration"] is not None:
                await asyncio.sleep(options["duration"])
            else:
                await arrivals
                await asyncio.Event().wait()
        finally:
            summary.cancel()
            self.stdout.write(site.summary())
            if site.checker is not None:
                self.stdout.write(str(site.checker.report()))
            await site.stop()

    async def summaries(self, site: AsyncSite, every_s: float) -> None:
        """One line every ``every_s`` seconds."""
        while True:
            await asyncio.sleep(every_s)
            self.stdout.write(site.summary())

    def what_if(self, options: dict[str, Any]) -> None:
        """Replay a day of arrivals against the site in the database; print (and save) the report."""
        from simulator.whatif_site import site_from_database  # Django models: only in this mode

        if options["step"] <= 0:
            raise CommandError("--step must be > 0")
        site = site_from_database()
        if not site.chargers:
            raise CommandError("no accepted charger in the database: the what-if replays against the site's chargers")
        source = options["what_if"]
        try:
            if source in PROFILES:
                cars = options["cars"] or max(1, round(len(site.chargers) * 1.5))
                arrivals = builtin_arrivals(source, cars, seed=options["seed"])
            else:
                path = Path(source)
                if not path.is_file():
                    raise CommandError(f"--what-if: {source!r} is neither a built-in profile "
                                       f"({', '.join(PROFILES)}) nor a file")
                arrivals = read_arrivals(path.read_text())
            day = dt.date.fromisoformat(options["date"]) if options["date"] else None
        except ValueError as error:
            raise CommandError(f"--what-if: {error}") from error
        report = replay(site.zones, site.chargers, arrivals, policy=site.policy, day_start=site.day_start(day),
                        step_s=options["step"], building_a=site.building_at_roots(tuple(options["building_a"])),
                        car_response_s=site.car_response_s, site_fallback_a=site.fallback_a)
        self.stdout.write(f"what-if: {len(arrivals)} cars, {len(site.chargers)} chargers, {len(site.zones)} zones, "
                          f"{site.policy.mode} sharing, shedding by {site.policy.shedding}")
        self.stdout.write(format_report(report, per_session=options["per_session"]))
        if options["json"]:
            Path(options["json"]).write_text(json.dumps(report.as_dict(), indent=2))
            self.stdout.write(f"written to {options['json']}")
