"""A whole site: N simulated chargers with cars, building meters and the invariant checker.

Everything runs in **one** asyncio event loop (no thread per charger), which is what lets a
test run 250 chargers on a small machine. Two faces:

- :class:`AsyncSite` for async code (the ``simulate_fleet`` command, async tests);
- :class:`Site`, a synchronous façade that runs an :class:`AsyncSite` in a background thread,
  for ordinary pytest tests that also query the database or call the loop's tasks.

Three loops run inside: physics (cars follow their limits, meters update) every ``tick_s``;
the checker every ``check_every_s`` and on every profile answer / session start / stop;
and each charger's own OCPP traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from simulator.car import CarSpec
from simulator.charger import ChargerEvent, ChargerSpec, Clock, SimulatedCharger
from simulator.checker import CheckerReport, Holding, InvariantChecker, Zone
from simulator.composite import TX
from simulator.meter import BuildingLoad, MeterServer, Phases, SimMeter

T = TypeVar("T")


class AsyncSite:
    """Chargers, cars, meters and the checker of one site, in the current event loop."""

    def __init__(
        self,
        url: str,
        *,
        zones: Sequence[Zone] = (),
        clock: Clock = time.time,
        tick_s: float = 0.2,
        check_every_s: float = 0.05,
        connect_concurrency: int = 50,
        meter_port: int = 0,
        count_all_charger_phases: bool = False,
        **checker_options: float,
    ) -> None:
        """``url``: the OCPP endpoint base, ``ws://host:port/ocpp`` (``/ocpp`` is added when missing).

        ``zones`` describe the electrical tree for the checker (none: no checking);
        ``count_all_charger_phases``: see :meth:`holdings`;
        ``checker_options`` go to :class:`InvariantChecker` (``new_session_grace_s``,
        ``reaction_grace_s``, ``tolerance_a``, ``tolerance_kw``).
        """
        self.url = url.rstrip("/") if url.rstrip("/").endswith("/ocpp") else url.rstrip("/") + "/ocpp"
        self.zones = list(zones)
        self.clock = clock
        self.tick_s = tick_s
        self.check_every_s = check_every_s
        self.meter_port = meter_port
        self.count_all_charger_phases = count_all_charger_phases
        self.chargers: dict[str, SimulatedCharger] = {}
        self.zone_of: dict[str, str | None] = {}
        self.meters: list[SimMeter] = []
        self.meter_server: MeterServer | None = None
        self.checker: InvariantChecker | None = InvariantChecker(self.zones, **checker_options) if zones else None
        self._connect_slots = asyncio.Semaphore(connect_concurrency)
        self._tasks: list[asyncio.Task[Any]] = []
        self._charger_tasks: dict[str, asyncio.Task[Any]] = {}
        self.running = False

    # ---------------------------------------------------------------- building the site
    def add_charger(self, spec: ChargerSpec, zone_id: str | None = None) -> SimulatedCharger:
        """A charger under ``zone_id`` (None: not checked). Started by :meth:`start` (or now, if running)."""
        if spec.cp_id in self.chargers:
            raise ValueError(f"duplicate charger {spec.cp_id}")
        if zone_id is not None and self.zones and zone_id not in {z.zone_id for z in self.zones}:
            raise ValueError(f"unknown zone {zone_id}")
        charger = SimulatedCharger(spec, self.url, clock=self.clock)
        charger.listeners.append(self._on_charger_event)
        self.chargers[spec.cp_id] = charger
        self.zone_of[spec.cp_id] = zone_id
        if self.running:
            self._start_charger(charger)
        return charger

    def add_meter(
        self, zone_id: str, *, building_a: Phases = (0.0, 0.0, 0.0), lag_s: float = 0.0, unit_id: int | None = None
    ) -> SimMeter:
        """The total-consumption meter of ``zone_id``: building load + cars in that zone's subtree.

        Add meters before :meth:`start` (they share one Modbus server, one unit id each).
        """
        inside = self._subtree(zone_id)

        def ev_currents() -> Phases:
            totals = [0.0, 0.0, 0.0]
            for cp_id, charger in self.chargers.items():
                if inside is None or self.zone_of[cp_id] in inside:
                    for index, value in enumerate(charger.supply_currents_a()):
                        totals[index] += value
            return totals[0], totals[1], totals[2]

        meter = SimMeter(zone_id, ev_currents, building=BuildingLoad(building_a), lag_s=lag_s,
                         unit_id=unit_id or len(self.meters) + 1)
        self.meters.append(meter)
        return meter

    def _subtree(self, zone_id: str) -> set[str] | None:
        """Zone ids at or under ``zone_id`` (None: no tree known, every charger counts)."""
        if zone_id not in {z.zone_id for z in self.zones}:
            return None
        found = {zone_id}
        grew = True
        while grew:
            grew = False
            for zone in self.zones:
                if zone.parent in found and zone.zone_id not in found:
                    found.add(zone.zone_id)
                    grew = True
        return found

    def meter(self, zone_id: str) -> SimMeter:
        """The meter of a zone."""
        return next(m for m in self.meters if m.zone_id == zone_id)

    # ---------------------------------------------------------------- running
    async def start(self, *, wait_booted: bool = True, timeout_s: float = 60.0) -> None:
        """Serve the meters, connect and boot every charger, start physics and checking."""
        if self.meters:
            self.meter_server = await MeterServer(self.meters, port=self.meter_port).start()
        self.running = True
        self._tasks.append(asyncio.create_task(self._physics()))
        if self.checker is not None:
            self._tasks.append(asyncio.create_task(self._checking()))
        for charger in self.chargers.values():
            self._start_charger(charger)
        if wait_booted:
            await self.wait_booted(timeout_s=timeout_s)

    def _start_charger(self, charger: SimulatedCharger) -> None:
        """Run the charger; at most ``connect_concurrency`` connect and boot at once (a burst of
        250 handshakes would otherwise all time out together on a small machine)."""
        async def run() -> None:
            task = asyncio.create_task(charger.run())
            booted = asyncio.create_task(charger.booted.wait())
            try:
                async with self._connect_slots:
                    await asyncio.wait([task, booted], timeout=30, return_when=asyncio.FIRST_COMPLETED)
                await task
            finally:
                booted.cancel()
                task.cancel()

        self._charger_tasks[charger.spec.cp_id] = asyncio.create_task(run())

    async def wait_booted(self, cp_ids: Iterable[str] | None = None, *, timeout_s: float = 60.0) -> None:
        """Until every (given) charger's BootNotification was Accepted."""
        chargers = [self.chargers[c] for c in cp_ids] if cp_ids is not None else list(self.chargers.values())
        await asyncio.wait_for(asyncio.gather(*(c.booted.wait() for c in chargers)), timeout_s)

    async def stop(self) -> None:
        """Close every link politely and stop the meters (idempotent)."""
        self.running = False
        for task in [*self._tasks, *self._charger_tasks.values()]:
            task.cancel()
        await asyncio.gather(*(c.close() for c in self.chargers.values()), return_exceptions=True)
        await asyncio.gather(*self._tasks, *self._charger_tasks.values(), return_exceptions=True)
        self._tasks.clear()
        self._charger_tasks.clear()
        if self.meter_server is not None:
            await self.meter_server.stop()
            self.meter_server = None

    async def _physics(self) -> None:
        while True:
            self.step()
            await asyncio.sleep(self.tick_s)

    async def _checking(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.check_every_s)

    def step(self) -> None:
        """Advance every car and meter to now."""
        now = self.clock()
        for charger in self.chargers.values():
            charger.step(now)
        for meter in self.meters:
            meter.update(now)

    # ---------------------------------------------------------------- sessions
    async def arrive(
        self, cp_id: str, connector_id: int = 1, car: CarSpec | None = None, id_tag: str | None = None
    ) -> int | None:
        """A car plugs in and its session starts; the transaction id (None: refused)."""
        return await self.chargers[cp_id].plug(connector_id, car, id_tag)

    async def leave(self, cp_id: str, connector_id: int = 1) -> None:
        """The car leaves: StopTransaction."""
        await self.chargers[cp_id].unplug(connector_id)

    async def arrivals(
        self, cp_ids: Sequence[str], *, interval_s: float = 0.0, car: CarSpec | None = None, connector_id: int = 1
    ) -> list[int | None]:
        """Cars arrive at ``cp_ids``: all at once (``interval_s`` 0, a burst) or one every ``interval_s``."""
        if interval_s <= 0:
            return list(await asyncio.gather(*(self.arrive(c, connector_id, car) for c in cp_ids)))
        found: list[int | None] = []
        for index, cp_id in enumerate(cp_ids):
            if index:
                await asyncio.sleep(interval_s)
            found.append(await self.arrive(cp_id, connector_id, car))
        return found

    def set_building(self, zone_id: str, value_a: Phases, *, at_s: float | None = None) -> None:
        """The building's own load in ``zone_id`` becomes ``value_a`` now (or at ``at_s``)."""
        self.meter(zone_id).building.step_at(self.clock() if at_s is None else at_s, value_a)

    def set_zone_capacity(
        self, zone_id: str, *, capacity_a: float | None = None, capacity_kw: float | None = None
    ) -> None:
        """Tell the checker a zone's limit changed (time of use, admin edit); both limits are replaced."""
        if self.checker is not None:
            self.checker.set_capacity(zone_id, capacity_a=capacity_a, capacity_kw=capacity_kw)

    # ---------------------------------------------------------------- checking
    def holdings(self) -> list[Holding]:
        """What every connector with a running transaction may draw now, by zone and supply phase.

        A limit is held on the phases the car can physically load (a single-phase car on a
        three-phase charger: the charger's L1 only), so a W limit converted for three phases
        shows up as its full per-phase current on that one phase. With
        ``count_all_charger_phases`` a three-phase charger holds its limit on all three
        phases whatever the car (stricter than physics).
        """
        found: list[Holding] = []
        for cp_id, charger in self.chargers.items():
            zone_id = self.zone_of[cp_id]
            if zone_id is None:
                continue
            for connector_id, limit in charger.held_limits_a().items():
                phases = (charger.spec.supply_phase_indexes if self.count_all_charger_phases
                          else charger.drawn_phase_indexes(connector_id))
                found.append(Holding.of(cp_id, connector_id, zone_id, limit, phases,
                                        charger.connectors[connector_id].transaction_id))
        return found

    def sample(self) -> None:
        """One checker sample now (building loads from the meters' true values)."""
        if self.checker is None:
            return
        now = self.clock()
        building = {m.zone_id: m.true_building_a(now) for m in self.meters}
        self.checker.observe(now, self.holdings(), building)

    def _on_charger_event(self, event: ChargerEvent) -> None:
        """Sessions and profile answers reach the checker at once, then it samples."""
        if self.checker is None:
            return
        if event.kind == "transaction_started" and event.transaction_id is not None:
            self.checker.transaction_started(event.cp_id, event.connector_id, event.transaction_id, event.at_s)
        elif event.kind == "profile_answered" and event.profile is not None and event.profile.purpose == TX:
            self.checker.tx_profile_answered(event.cp_id, event.connector_id, event.transaction_id,
                                             event.profile.status, event.at_s)
        self.sample()

    def summary(self) -> str:
        """One line: chargers online, sessions, amps drawn, energy, breaches."""
        online = sum(1 for c in self.chargers.values() if c.online.is_set())
        sessions = [s for c in self.chargers.values() for s in c.connectors.values() if s.transaction_id is not None]
        drawn = [sum(c.supply_currents_a()[i] for c in self.chargers.values()) for i in range(3)]
        energy_kwh = sum(s.meter_wh for c in self.chargers.values() for s in c.connectors.values()) / 1000.0
        breaches = len(self.checker.breaches) if self.checker is not None else 0
        return (f"online {online}/{len(self.chargers)}  sessions {len(sessions)}  "
                f"drawn L1/L2/L3 {drawn[0]:.0f}/{drawn[1]:.0f}/{drawn[2]:.0f} A  "
                f"energy {energy_kwh:.1f} kWh  breaches {breaches}")


class Site:
    """Synchronous façade: an :class:`AsyncSite` in a background event-loop thread.

    Build it (chargers, meters), :meth:`start`, drive it (:meth:`arrive`, :meth:`leave`,
    :meth:`set_building`), read it (:meth:`limit_a`, :meth:`charger`, :meth:`report`), then
    :meth:`stop` — or use it as a context manager.
    """

    def __init__(self, url: str, *, zones: Sequence[Zone] = (), **options: Any) -> None:
        """Same arguments as :class:`AsyncSite`."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="site-sim", daemon=True)
        self.thread.start()
        self.core: AsyncSite = self.run(self._make(url, zones, options))

    @staticmethod
    async def _make(url: str, zones: Sequence[Zone], options: dict[str, Any]) -> AsyncSite:
        return AsyncSite(url, zones=zones, **options)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        """Run a coroutine in the site's loop and wait for its result."""
        if threading.current_thread() is self.thread:
            coroutine.close()
            raise RuntimeError("Site.run() called from the site's own loop: it would wait for itself")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def in_loop(self, function: Callable[[], T]) -> T:
        """Call ``function`` in the site's loop (consistent reads of simulator state).

        Already in the loop (e.g. a :meth:`wait_until` predicate that calls :meth:`report`),
        it is called directly.
        """
        if threading.current_thread() is self.thread:
            return function()

        async def wrapper() -> T:
            return function()

        return self.run(wrapper())

    # building
    def add_charger(self, spec: ChargerSpec, zone_id: str | None = None) -> SimulatedCharger:
        """See :meth:`AsyncSite.add_charger`."""
        return self.in_loop(lambda: self.core.add_charger(spec, zone_id))

    def add_chargers(self, specs: Iterable[ChargerSpec], zone_id: str | None = None) -> list[SimulatedCharger]:
        """Several chargers under one zone."""
        return [self.add_charger(spec, zone_id) for spec in specs]

    def add_meter(self, zone_id: str, **options: Any) -> SimMeter:
        """See :meth:`AsyncSite.add_meter`."""
        return self.in_loop(lambda: self.core.add_meter(zone_id, **options))

    # running
    def start(self, *, timeout_s: float = 60.0) -> Site:
        """Start meters, chargers (boot), physics and checker; returns self."""
        self.run(self.core.start(timeout_s=timeout_s), timeout_s + 5)
        return self

    def stop(self) -> None:
        """Stop everything and the thread (idempotent)."""
        if not self.thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.run(self.core.stop(), 20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def __enter__(self) -> Site:
        """``with Site(url, zones=...) as site:`` (call :meth:`start` inside)."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Always stop."""
        self.stop()

    # driving
    def arrive(self, cp_id: str, connector_id: int = 1, car: CarSpec | None = None,
               id_tag: str | None = None) -> int | None:
        """A car arrives; the transaction id (None: refused)."""
        return self.run(self.core.arrive(cp_id, connector_id, car, id_tag))

    def arrivals(self, cp_ids: Sequence[str], *, interval_s: float = 0.0, car: CarSpec | None = None,
                 connector_id: int = 1, timeout_s: float = 120.0) -> list[int | None]:
        """Burst (``interval_s`` 0) or one-by-one arrivals; transaction ids in order."""
        return self.run(self.core.arrivals(cp_ids, interval_s=interval_s, car=car, connector_id=connector_id),
                        timeout_s)

    def leave(self, cp_id: str, connector_id: int = 1) -> None:
        """The car leaves (StopTransaction)."""
        self.run(self.core.leave(cp_id, connector_id))

    def set_building(self, zone_id: str, value_a: Phases) -> None:
        """Step the building load of ``zone_id`` now."""
        self.in_loop(lambda: self.core.set_building(zone_id, value_a))

    def set_zone_capacity(
        self, zone_id: str, *, capacity_a: float | None = None, capacity_kw: float | None = None
    ) -> None:
        """The checker's limits of a zone change now (mirror what the test changed in the controller)."""
        self.in_loop(lambda: self.core.set_zone_capacity(zone_id, capacity_a=capacity_a, capacity_kw=capacity_kw))

    def set_meter_dead(self, zone_id: str, mode: str | None) -> None:
        """The zone's meter stops answering (``"silent"``), answers exceptions, or recovers (None)."""
        self.in_loop(lambda: self.core.meter(zone_id).set_dead(mode))  # type: ignore[arg-type]

    def set_behaviour(self, cp_id: str, behaviour: str) -> None:
        """Switch a charger's behaviour while running (e.g. to "silent")."""
        def switch() -> None:
            self.core.chargers[cp_id].behaviour = behaviour  # type: ignore[assignment]

        self.in_loop(switch)

    # reading
    def charger(self, cp_id: str) -> SimulatedCharger:
        """The simulated charger (read its state through :meth:`in_loop` for consistency)."""
        return self.core.chargers[cp_id]

    def limit_a(self, cp_id: str, connector_id: int = 1) -> float:
        """The connector's composite limit now (A per phase, rating-capped)."""
        return self.in_loop(lambda: self.core.chargers[cp_id].limit_a(connector_id))

    def transaction_id(self, cp_id: str, connector_id: int = 1) -> int | None:
        """Running transaction on the connector."""
        return self.in_loop(lambda: self.core.chargers[cp_id].transaction_id(connector_id))

    def wait_until(self, predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05) -> Any:
        """Poll ``predicate`` (evaluated in the site's loop) until truthy; AssertionError on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.in_loop(predicate)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout_s} s")
            time.sleep(interval_s)

    @property
    def checker(self) -> InvariantChecker:
        """The invariant checker (the site must have been given zones)."""
        if self.core.checker is None:
            raise RuntimeError("no zones given: the site has no checker")
        return self.core.checker

    def report(self) -> CheckerReport:
        """The checker's figures so far."""
        return self.in_loop(lambda: self.checker.report())

    def assert_clean(self) -> None:
        """Raise with a readable report if any zone was over capacity (outside the graces)."""
        self.in_loop(lambda: self.checker.assert_clean())

    @property
    def meter_port(self) -> int:
        """Port of the Modbus server hosting the meters (after :meth:`start`)."""
        if self.core.meter_server is None:
            raise RuntimeError("no meter served (add_meter before start)")
        return self.core.meter_server.port
