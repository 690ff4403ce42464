"""A simulated OCPP 1.6J charge point: the ``ocpp`` library's ChargePoint over ``websockets``.

It behaves like a real charger as far as a load manager can tell: it boots, reports status,
authorizes, starts and stops transactions, sends MeterValues (per-phase current, power,
energy register) and heartbeats, answers GetConfiguration/ChangeConfiguration with the
smart-charging keys, and *holds* the profiles it accepted (:mod:`simulator.composite`), so
that its composite limit — what the car may draw — is known at every instant.

Misbehaviour is data (:class:`ChargerSpec`), because the point is to see the controller
survive the chargers found in the field:

- ``slow``: answers SetChargingProfile after ``answer_delay_s`` (and applies it then);
- ``silent``: never answers any server call, but keeps the link, MeterValues and heartbeats;
- ``rejecting``: answers Rejected to every SetChargingProfile;
- ``vanishing``: drops the TCP connection (no close frame) when ``vanish_on`` arrives or at
  ``vanish_at_s`` after connecting, ``vanish_times`` times (then it behaves), and reconnects
  after ``reconnect_after_s`` if set, replaying the transaction messages it queued meanwhile;
- W-only (``rate_units="Power"``), dual socket (``connectors=2``), single phase on a supply
  phase (``phases=1, supply_phase="L2"``: it still reports its current as phase "L1", as real
  single-phase chargers do, since it does not know how it is wired).

Every message runs in the one event loop of its :class:`~simulator.site.AsyncSite`; server
calls are handled in tasks of their own so a slow answer never blocks the charger's own calls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from simulator.car import Car, CarSpec
from simulator.composite import (
    TX,
    VOLTAGE_V,
    ChargingProfile,
    CompositeLimit,
    ProfileLimits,
    ProfileStore,
    share_charge_point_max,
)

logger = logging.getLogger(__name__)

Behaviour = Literal["normal", "slow", "silent", "rejecting", "vanishing"]
PHASES: Final = ("L1", "L2", "L3")
ACCEPTED: Final = "Accepted"
OFFLINE_QUEUE_MAX: Final = 1000  # transaction messages kept while offline, as a charger's flash would
READONLY_KEYS: Final = frozenset(
    {"NumberOfConnectors", "ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit",
     "ChargingScheduleMaxPeriods", "MaxChargingProfilesInstalled", "SupportedFeatureProfiles"}
)
Clock = Callable[[], float]


def iso(moment: dt.datetime) -> str:
    """OCPP timestamp (ISO 8601, UTC)."""
    return moment.astimezone(dt.UTC).isoformat()


@dataclass(frozen=True)
class ChargerSpec:
    """How one simulated charger is built and how it behaves (see the module docstring)."""

    cp_id: str
    connectors: int = 1
    phases: int = 3
    supply_phase: str = "L1"
    rated_a: float = 32.0
    behaviour: Behaviour = "normal"
    answer_delay_s: float = 5.0
    vanish_on: str | None = "SetChargingProfile"
    vanish_at_s: float | None = None
    vanish_times: int = 1
    reconnect_after_s: float | None = None
    rate_units: str = "Current,Power"
    max_stack_level: int = 8
    max_periods: int = 24
    meter_interval_s: float = 10.0
    follow_sample_interval: bool = False
    heartbeat_interval_s: float | None = None
    id_tag: str = "SIMTAG"
    password: str | None = None
    vendor: str = "EVCE-Sim"
    model: str = "Sim-22"

    @property
    def supply_phase_indexes(self) -> tuple[int, ...]:
        """Supply phases (0 = L1) this charger loads: all three, or the one it is wired to."""
        return (0, 1, 2) if self.phases == 3 else (PHASES.index(self.supply_phase),)


@dataclass
class ProfileEvent:
    """One SetChargingProfile as the charger lived it (times in clock seconds)."""

    received_s: float
    connector_id: int
    purpose: str
    profile_id: int
    stack_level: int
    transaction_id: int | None
    limit: float
    rate_unit: str
    answered_s: float | None = None
    status: str | None = None  # Accepted, Rejected, Dropped (link lost), None (never answered)
    reason: str | None = None


@dataclass
class ConnectorState:
    """One connector: its car, its transaction and its energy register."""

    connector_id: int
    status: str = "Available"
    car: Car | None = None
    transaction_id: int | None = None
    transaction_started_s: float | None = None
    transaction_started_at: dt.datetime | None = None
    first_tx_profile_s: float | None = None
    meter_wh: float = 0.0
    offered_a: float = 0.0
    starting: asyncio.Event | None = None
    events: list[ProfileEvent] = field(default_factory=list)

    @property
    def current_a(self) -> float:
        """What the car draws now, per phase in use."""
        return self.car.current_a if self.car is not None else 0.0


@dataclass(frozen=True)
class ChargerEvent:
    """Something a listener (the invariant checker) must see at once."""

    kind: Literal["transaction_started", "transaction_stopped", "profile_answered", "link"]
    cp_id: str
    connector_id: int
    at_s: float
    transaction_id: int | None = None
    profile: ProfileEvent | None = None


class SimulatedCharger(ChargePoint):
    """One simulated charge point; :meth:`run` connects, boots and serves until cancelled."""

    def __init__(self, spec: ChargerSpec, url: str, *, clock: Clock = time.time) -> None:
        """``url`` is the central system's base, e.g. ``ws://127.0.0.1:8000/ocpp`` (the id is appended)."""
        super().__init__(spec.cp_id, None, response_timeout=15)
        self.spec = spec
        self.url = f"{url.rstrip('/')}/{spec.cp_id}"
        self.clock = clock
        self.connectors = {n: ConnectorState(n) for n in range(1, spec.connectors + 1)}
        self.store = ProfileStore(
            ProfileLimits(
                number_of_connectors=spec.connectors,
                max_stack_level=spec.max_stack_level,
                allowed_units=ProfileLimits.units_from_key(spec.rate_units),
                max_periods=spec.max_periods,
            )
        )
        self.config: dict[str, str] = {
            "HeartbeatInterval": str(int(spec.heartbeat_interval_s or 300)),
            "MeterValueSampleInterval": str(max(1, round(spec.meter_interval_s))),
            "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import,Current.Import",
            "NumberOfConnectors": str(spec.connectors),
            "ChargeProfileMaxStackLevel": str(spec.max_stack_level),
            "ChargingScheduleAllowedChargingRateUnit": spec.rate_units,
            "ChargingScheduleMaxPeriods": str(spec.max_periods),
            "MaxChargingProfilesInstalled": "32",
            "SupportedFeatureProfiles": "Core,SmartCharging,RemoteTrigger,LocalAuthListManagement",
        }
        self.behaviour: Behaviour = spec.behaviour
        self.listeners: list[Callable[[ChargerEvent], None]] = []
        self.online = asyncio.Event()
        self.booted = asyncio.Event()
        self.boot_status: str | None = None
        self.heartbeat_interval_s = spec.heartbeat_interval_s or 300.0
        # The test's interval wins unless follow_sample_interval: the server's
        # MeterValueSampleInterval (often 60 s) would make short tests see nothing.
        self.meter_interval_s = spec.meter_interval_s
        self.disconnects = 0
        self.local_list_version = 0
        self.calls_received: Counter[str] = Counter()  # server CALLs by action, answered or not
        self._offline_queue: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cache: dict[int, tuple[int, CompositeLimit]] = {}
        self._version = 0
        self._cp_events: list[ProfileEvent] = []  # profiles sent to connector 0
        self._link_lost = asyncio.Event()

    # ------------------------------------------------------------------ state queries
    def now_dt(self) -> dt.datetime:
        """The simulator clock as an aware datetime."""
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    def phases_in_use(self, connector_id: int) -> int:
        """Phases the connector's car draws on (the charger's phases when no car is plugged)."""
        car = self.connectors[connector_id].car
        return min(self.spec.phases, car.spec.phases) if car is not None else self.spec.phases

    def composite(self, connector_id: int) -> CompositeLimit:
        """The connector's §3.13 composite now (cached until a profile or schedule changes it)."""
        now = self.now_dt()
        cached = self._cache.get(connector_id)
        if cached is not None and cached[0] == self._version:
            valid_until = cached[1].valid_until
            if valid_until is None or now < valid_until:
                return cached[1]
        state = self.connectors[connector_id]
        result = self.store.composite(
            connector_id,
            now,
            transaction_id=state.transaction_id,
            transaction_start=state.transaction_started_at,
            phases_in_use=self.phases_in_use(connector_id),
        )
        self._cache[connector_id] = (self._version, result)
        return result

    def limit_a(self, connector_id: int = 1) -> float:
        """Composite limit now in amps per phase (worst phase), capped by the charger's rating."""
        limit = self.composite(connector_id).limit_a
        return self.spec.rated_a if limit is None else min(limit, self.spec.rated_a)

    def transaction_id(self, connector_id: int = 1) -> int | None:
        """The running transaction on the connector (None: none)."""
        return self.connectors[connector_id].transaction_id

    def profile_events(self, connector_id: int | None = None) -> list[ProfileEvent]:
        """SetChargingProfile log, of one connector (0 included) or of all, oldest first."""
        if connector_id is not None:
            return list(self.connectors[connector_id].events) if connector_id else list(self._cp_events)
        found = [*self._cp_events, *(e for c in self.connectors.values() for e in c.events)]
        return sorted(found, key=lambda e: e.received_s)

    def _touch(self) -> None:
        """Profiles or transactions changed: cached composites are stale."""
        self._version += 1

    def _emit(self, event: ChargerEvent) -> None:
        """Tell the listeners; one failing listener must not break the charger."""
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a checker bug must not kill the simulation
                logger.exception("listener failed on %s", event)

    # ------------------------------------------------------------------ physics
    def held_limits_a(self) -> dict[int, float]:
        """Per connector with a running transaction: the amps per phase its car may draw now.

        The composite, capped by the charger's rating, with a ChargePointMaxProfile shared
        between the connectors that charge (§3.13.3: it caps them combined).
        """
        limits: dict[int, float | None] = {}
        charge_point_max: float | None = None
        for number, state in self.connectors.items():
            if state.transaction_id is None:
                continue
            composite = self.composite(number)
            limit = composite.limit_a
            limits[number] = self.spec.rated_a if limit is None else min(self.spec.rated_a, limit)
            if composite.charge_point_max_a is not None:
                charge_point_max = composite.charge_point_max_a
        shared = share_charge_point_max(limits, charge_point_max)
        return {number: value or 0.0 for number, value in shared.items()}

    def step(self, now_s: float) -> None:
        """Advance the cars to ``now_s``: offer each its held limit, integrate energy."""
        offers = self.held_limits_a()
        for number, state in self.connectors.items():
            if state.car is None:
                continue
            offer = offers.get(number, 0.0)
            state.offered_a = offer
            state.car.offer(now_s, offer)
            before = state.car.energy_wh
            state.car.update(now_s)
            state.meter_wh += state.car.energy_wh - before

    def drawn_phase_indexes(self, connector_id: int) -> tuple[int, ...]:
        """Supply phases the connector's car can load: a single-phase car on a three-phase
        charger draws on the charger's L1 only (standard rotation: charger L1 = supply L1)."""
        return self.spec.supply_phase_indexes[: self.phases_in_use(connector_id)]

    def supply_currents_a(self) -> tuple[float, float, float]:
        """Current drawn now on the supply's L1, L2, L3 (what a meter upstream sees)."""
        totals = [0.0, 0.0, 0.0]
        for state in self.connectors.values():
            if state.car is None or not state.current_a:
                continue
            for index in self.drawn_phase_indexes(state.connector_id):
                totals[index] += state.current_a
        return totals[0], totals[1], totals[2]

    # ------------------------------------------------------------------ connection
    async def connect(self) -> None:
        """Open the websocket (subprotocol ocpp1.6, Basic auth when a password is set)."""
        headers: dict[str, str] = {}
        if self.spec.password is not None:
            token = base64.b64encode(f"{self.spec.cp_id}:{self.spec.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        self._connection = await websockets.connect(
            self.url, subprotocols=[websockets.Subprotocol("ocpp1.6")], additional_headers=headers,
            open_timeout=20, ping_interval=None,
        )
        self._response_queue: asyncio.Queue[Any] = asyncio.Queue()  # answers of the old link are void
        self._link_lost = asyncio.Event()
        self.online.set()

    async def run(self) -> None:
        """Connect, boot, then serve and report until cancelled; reconnect if configured."""
        first = True
        while True:
            try:
                await self.connect()
            except (OSError, websockets.WebSocketException, TimeoutError) as error:
                logger.warning("%s: cannot connect: %s", self.spec.cp_id, error)
                await asyncio.sleep(1.0)
                continue
            reader = asyncio.create_task(self.start())
            periodic = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._meter_values())]
            if self.spec.behaviour == "vanishing" and self.spec.vanish_at_s is not None and first:
                periodic.append(asyncio.create_task(self._vanish_later(self.spec.vanish_at_s)))
            try:
                if first:
                    await self._boot()
                else:
                    await self._resume()
                first = False
                await reader
            except (websockets.ConnectionClosed, OSError, TimeoutError) as error:
                logger.info("%s: link lost: %s", self.spec.cp_id, error)
            finally:
                for task in (reader, *periodic):
                    task.cancel()
                self._lose_link()
                self.disconnects += 1
                self._emit(ChargerEvent("link", self.spec.cp_id, 0, self.clock()))
            reconnect_after_s = self.spec.reconnect_after_s
            if reconnect_after_s is None:
                await asyncio.Event().wait()  # gone for good, but the cars keep charging
                return
            await asyncio.sleep(reconnect_after_s)

    async def close(self) -> None:
        """Close the websocket politely (end of a test)."""
        for task in list(self._tasks):
            task.cancel()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    def vanish(self) -> None:
        """Drop the TCP connection without a close frame, as a power cut or a router would."""
        self._lose_link()
        if self._connection is not None:
            self._connection.transport.abort()

    def _lose_link(self) -> None:
        """Offline from now on: calls in flight give up, new transaction messages are queued."""
        self.online.clear()
        self._link_lost.set()

    async def _vanish_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self.vanish()

    async def start(self) -> None:
        """Receive frames; server CALLs run in tasks so a slow answer blocks nothing else."""
        while True:
            message = await self._connection.recv()
            if isinstance(message, bytes):
                message = message.decode()
            frame = json.loads(message)
            if frame and frame[0] == 2:
                self._spawn(self._on_server_call(message, frame))
            else:
                await self.route_message(message)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_server_call(self, message: str, frame: list[Any]) -> None:
        """Misbehave as configured, or route the CALL to its handler."""
        action = frame[2] if len(frame) > 2 else ""
        self.calls_received[action] += 1
        if self.behaviour == "silent":
            if action == "SetChargingProfile":
                self._record_unanswered(frame[3], None)
            return
        if self._vanishes_on(action):
            if action == "SetChargingProfile":
                self._record_unanswered(frame[3], "Dropped")
            self.vanish()
            return
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.route_message(message)

    def _vanishes_on(self, action: str) -> bool:
        """A vanishing charger drops the link when its trigger call arrives (a bounded number of times)."""
        return (self.behaviour == "vanishing" and self.spec.vanish_on == action
                and self.disconnects < self.spec.vanish_times)

    def _record_unanswered(self, payload: dict[str, Any], status: str | None) -> None:
        """Log a SetChargingProfile the charger will never answer."""
        try:
            profile = ChargingProfile.from_ocpp(payload["csChargingProfiles"])
            event = self._event_from(int(payload["connectorId"]), profile)
        except (KeyError, TypeError, ValueError):
            return
        event.status = status
        self._log_event(event)

    async def _call(self, payload: Any, *, queue_offline: bool = False) -> Any:
        """Send a CALL; None when offline or unanswered (queued first if ``queue_offline``)."""
        if not self.online.is_set():
            if queue_offline:
                self._queue(payload)
            return None
        try:
            return await self._call_or_lose_link(payload)
        except (websockets.ConnectionClosed, TimeoutError, OSError) as error:
            logger.info("%s: %s failed: %s", self.spec.cp_id, type(payload).__name__, error)
            if isinstance(error, websockets.ConnectionClosed | OSError):
                self._lose_link()
            if queue_offline:
                self._queue(payload)
            return None

    async def _call_or_lose_link(self, payload: Any) -> Any:
        """``call``, abandoned as soon as the link drops (no answer can come on a dead socket;
        waiting for the timeout would hold the call lock and delay the replay after reconnecting)."""
        pending = asyncio.ensure_future(self.call(payload, skip_schema_validation=True))
        lost = asyncio.ensure_future(self._link_lost.wait())
        try:
            await asyncio.wait([pending, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
            raise websockets.ConnectionClosed(None, None)
        return pending.result()

    def _queue(self, payload: Any) -> None:
        """Keep a transaction message for replay; the oldest MeterValues go first when full."""
        if len(self._offline_queue) >= OFFLINE_QUEUE_MAX:
            for index, queued in enumerate(self._offline_queue):
                if isinstance(queued, call.MeterValues):
                    del self._offline_queue[index]
                    break
        self._offline_queue.append(payload)

    async def _boot(self) -> None:
        """BootNotification until Accepted, then statuses of every connector."""
        while self.online.is_set():
            answer = await self._call(
                call.BootNotification(charge_point_vendor=self.spec.vendor, charge_point_model=self.spec.model)
            )
            self.boot_status = answer.status if answer is not None else None
            if answer is not None and answer.status == ACCEPTED:
                if self.spec.heartbeat_interval_s is None and answer.interval:
                    self.heartbeat_interval_s = float(answer.interval)
                break
            await asyncio.sleep(max(1.0, float(answer.interval) if answer is not None else 1.0))
        if not self.online.is_set():
            return
        await self._status(0, "Available")
        for state in self.connectors.values():
            await self._status(state.connector_id, state.status)
        self.booted.set()

    async def _resume(self) -> None:
        """Back online after a drop: statuses, then what was queued, in order (OCPP §3.7)."""
        for state in self.connectors.values():
            await self._status(state.connector_id, state.status)
        queued, self._offline_queue = self._offline_queue, []
        for payload in queued:
            await self._call(payload, queue_offline=True)

    async def _status(self, connector_id: int, status: str) -> None:
        if connector_id:
            self.connectors[connector_id].status = status
        await self._call(call.StatusNotification(connector_id=connector_id, error_code="NoError", status=status,
                                                 timestamp=iso(self.now_dt())))

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            await self._call(call.Heartbeat())

    async def _meter_values(self) -> None:
        await self.booted.wait()
        while True:
            await asyncio.sleep(self.meter_interval_s)
            for state in self.connectors.values():
                if state.transaction_id is not None:
                    await self._call(self.meter_values_payload(state), queue_offline=True)

    def meter_values_payload(self, state: ConnectorState) -> call.MeterValues:
        """Periodic sample: per-phase current (labelled as the charger sees its phases), power, energy."""
        phases = self.phases_in_use(state.connector_id)
        sampled: list[dict[str, Any]] = [
            {"value": f"{state.current_a if index < phases else 0.0:.1f}", "measurand": "Current.Import",
             "phase": PHASES[index], "unit": "A", "context": "Sample.Periodic"}
            for index in range(self.spec.phases)
        ]
        sampled.append({"value": f"{state.current_a * VOLTAGE_V * phases:.0f}", "measurand": "Power.Active.Import",
                        "unit": "W", "context": "Sample.Periodic"})
        sampled.append({"value": f"{state.meter_wh:.0f}", "measurand": "Energy.Active.Import.Register",
                        "unit": "Wh", "context": "Sample.Periodic"})
        return call.MeterValues(
            connector_id=state.connector_id,
            transaction_id=state.transaction_id,
            meter_value=[{"timestamp": iso(self.now_dt()), "sampled_value": sampled}],
        )

    # ------------------------------------------------------------------ sessions
    async def plug(self, connector_id: int = 1, car: CarSpec | None = None, id_tag: str | None = None) -> int | None:
        """A car arrives: Preparing, Authorize, StartTransaction; the transaction id (None: refused).

        A StartTransaction answered with an idTagInfo other than Accepted is stopped at once
        (reason DeAuthorized), as the spec asks of a charger.
        """
        state = self.connectors[connector_id]
        if state.car is not None:
            raise RuntimeError(f"{self.spec.cp_id} connector {connector_id} is occupied")
        tag = id_tag or self.spec.id_tag
        state.car = Car(car, now_s=self.clock())
        self._touch()
        await self._status(connector_id, "Preparing")
        auth = await self._call(call.Authorize(id_tag=tag))
        if auth is None or auth.id_tag_info.get("status") != ACCEPTED:
            state.car = None
            self._touch()
            await self._status(connector_id, "Available")
            return None
        state.starting = asyncio.Event()
        try:
            started = await self._call(call.StartTransaction(
                connector_id=connector_id, id_tag=tag, meter_start=int(state.meter_wh), timestamp=iso(self.now_dt())
            ))
            if started is None:
                state.car = None
                await self._status(connector_id, "Available")
                return None
            state.transaction_id = started.transaction_id
            state.transaction_started_s = self.clock()
            state.transaction_started_at = self.now_dt()
            state.first_tx_profile_s = None
            self._touch()
        finally:
            state.starting.set()
            state.starting = None
        self._emit(ChargerEvent("transaction_started", self.spec.cp_id, connector_id, self.clock(),
                                transaction_id=started.transaction_id))
        if started.id_tag_info.get("status") != ACCEPTED:
            await self.unplug(connector_id, reason="DeAuthorized")
            return None
        await self._status(connector_id, "Charging")
        return int(started.transaction_id)

    async def unplug(self, connector_id: int = 1, *, reason: str = "EVDisconnected") -> None:
        """The car leaves: StopTransaction (queued when offline), TxProfiles dropped, Available."""
        state = self.connectors[connector_id]
        transaction_id = state.transaction_id
        if transaction_id is not None:
            self.step(self.clock())
            state.transaction_id = None
            state.transaction_started_s = None
            state.transaction_started_at = None
            self.store.end_transaction(connector_id)
            self._touch()
            self._emit(ChargerEvent("transaction_stopped", self.spec.cp_id, connector_id, self.clock(),
                                    transaction_id=transaction_id))
            await self._status(connector_id, "Finishing")
            await self._call(call.StopTransaction(
                meter_stop=int(state.meter_wh), timestamp=iso(self.now_dt()), transaction_id=transaction_id,
                reason=reason, id_tag=self.spec.id_tag,
            ), queue_offline=True)
        state.car = None
        state.offered_a = 0.0
        self._touch()
        await self._status(connector_id, "Available")

    # ------------------------------------------------------------------ smart charging
    def _event_from(self, connector_id: int, profile: ChargingProfile) -> ProfileEvent:
        return ProfileEvent(
            received_s=self.clock(), connector_id=connector_id, purpose=profile.purpose,
            profile_id=profile.profile_id, stack_level=profile.stack_level, transaction_id=profile.transaction_id,
            limit=profile.periods[0].limit if profile.periods else 0.0, rate_unit=profile.rate_unit,
        )

    def _log_event(self, event: ProfileEvent) -> None:
        if event.connector_id in self.connectors:
            self.connectors[event.connector_id].events.append(event)
        else:
            self._cp_events.append(event)

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        """Install (or refuse) the profile as a strict charger would, after the configured delay."""
        profile = ChargingProfile.from_ocpp(cs_charging_profiles)
        event = self._event_from(connector_id, profile)
        self._log_event(event)
        state = self.connectors.get(connector_id)
        if state is not None and state.starting is not None:
            await asyncio.wait_for(state.starting.wait(), 10)  # its StartTransaction answer is in flight
        if self.behaviour == "slow":
            await asyncio.sleep(self.spec.answer_delay_s)
        status: str
        reason: str | None
        if self.behaviour == "rejecting":
            status, reason = "Rejected", "rejecting charger"
        else:
            transaction_id = state.transaction_id if state is not None else None
            status, reason = self.store.install(connector_id, profile, transaction_id=transaction_id,
                                                now=self.now_dt())
            self._touch()
        event.answered_s, event.status, event.reason = self.clock(), status, reason
        if state is not None and profile.purpose == TX and status == ACCEPTED and state.first_tx_profile_s is None:
            state.first_tx_profile_s = event.answered_s
        self._emit(ChargerEvent("profile_answered", self.spec.cp_id, connector_id, event.answered_s,
                                transaction_id=profile.transaction_id, profile=event))
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(self, id: int | None = None, connector_id: int | None = None,
                                        charging_profile_purpose: str | None = None,
                                        stack_level: int | None = None) -> Any:
        """ClearChargingProfile (§5.5): Unknown when nothing matched."""
        removed = self.store.clear(profile_id=id, connector_id=connector_id, purpose=charging_profile_purpose,
                                   stack_level=stack_level)
        self._touch()
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(self, connector_id: int, duration: int,
                                        charging_rate_unit: str | None = None) -> Any:
        """The composite now, as a one-period schedule in amps."""
        if connector_id not in self.connectors:
            return call_result.GetCompositeSchedule(status="Rejected")
        limit = self.limit_a(connector_id)
        schedule = {"duration": duration, "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": round(limit, 1)}]}
        return call_result.GetCompositeSchedule(status="Accepted", connector_id=connector_id,
                                                schedule_start=iso(self.now_dt()), charging_schedule=schedule)

    # ------------------------------------------------------------------ configuration and the rest
    @on(Action.get_configuration)
    async def on_get_configuration(self, key: list[str] | None = None) -> Any:
        """Every key (or the requested ones), with unknown ones listed as such."""
        wanted = key or sorted(self.config)
        known = [
            {"key": k, "value": self.config[k], "readonly": k in READONLY_KEYS} for k in wanted if k in self.config
        ]
        unknown = [k for k in wanted if k not in self.config]
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.change_configuration)
    async def on_change_configuration(self, key: str, value: str) -> Any:
        """Writable keys are stored (HeartbeatInterval takes effect); read-only ones are Rejected."""
        if key in READONLY_KEYS:
            return call_result.ChangeConfiguration(status="Rejected")
        self.config[key] = value
        if key == "MeterValueSampleInterval" and self.spec.follow_sample_interval:
            with contextlib.suppress(ValueError):
                self.meter_interval_s = max(1.0, float(value))
        if key == "HeartbeatInterval" and self.spec.heartbeat_interval_s is None:
            with contextlib.suppress(ValueError):
                self.heartbeat_interval_s = max(1.0, float(value))
        return call_result.ChangeConfiguration(status="Accepted")

    @on(Action.remote_start_transaction)
    async def on_remote_start_transaction(self, id_tag: str, connector_id: int | None = None,
                                          charging_profile: dict[str, Any] | None = None) -> Any:
        """Accepted when a connector is free: a default car plugs in there."""
        free = [n for n, s in self.connectors.items() if s.car is None and connector_id in (None, n)]
        if not free:
            return call_result.RemoteStartTransaction(status="Rejected")
        self._spawn(self.plug(free[0], None, id_tag))
        return call_result.RemoteStartTransaction(status="Accepted")

    @on(Action.remote_stop_transaction)
    async def on_remote_stop_transaction(self, transaction_id: int) -> Any:
        """Stop the matching transaction (reason Remote)."""
        for number, state in self.connectors.items():
            if state.transaction_id == transaction_id:
                self._spawn(self.unplug(number, reason="Remote"))
                return call_result.RemoteStopTransaction(status="Accepted")
        return call_result.RemoteStopTransaction(status="Rejected")

    @on(Action.trigger_message)
    async def on_trigger_message(self, requested_message: str, connector_id: int | None = None) -> Any:
        """Heartbeat, StatusNotification and MeterValues are sent again on request."""
        if requested_message == "Heartbeat":
            self._spawn(self._call(call.Heartbeat()))
        elif requested_message == "StatusNotification":
            for number, state in self.connectors.items():
                if connector_id in (None, number):
                    self._spawn(self._status(number, state.status))
        elif requested_message == "MeterValues":
            for number, state in self.connectors.items():
                if connector_id in (None, number) and state.transaction_id is not None:
                    self._spawn(self._call(self.meter_values_payload(state)))
        else:
            return call_result.TriggerMessage(status="NotImplemented")
        return call_result.TriggerMessage(status="Accepted")

    @on(Action.send_local_list)
    async def on_send_local_list(self, list_version: int, update_type: str,
                                 local_authorization_list: list[Any] | None = None) -> Any:
        """Stored version only: the simulator authorizes online."""
        self.local_list_version = list_version
        return call_result.SendLocalList(status="Accepted")

    @on(Action.get_local_list_version)
    async def on_get_local_list_version(self) -> Any:
        """Version of the last list received (0: none)."""
        return call_result.GetLocalListVersion(list_version=self.local_list_version)

    @on(Action.reset)
    async def on_reset(self, type: str) -> Any:
        """Accepted, and nothing happens (a simulated reboot would only lose the test's state)."""
        return call_result.Reset(status="Accepted")

    @on(Action.change_availability)
    async def on_change_availability(self, connector_id: int, type: str) -> Any:
        """Accepted."""
        return call_result.ChangeAvailability(status="Accepted")

    @on(Action.clear_cache)
    async def on_clear_cache(self) -> Any:
        """Accepted."""
        return call_result.ClearCache(status="Accepted")

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, connector_id: int) -> Any:
        """Unlocked."""
        return call_result.UnlockConnector(status="Unlocked")

    @on(Action.data_transfer)
    async def on_data_transfer(self, vendor_id: str, message_id: str | None = None, data: str | None = None) -> Any:
        """No vendor extensions."""
        return call_result.DataTransfer(status="UnknownVendorId")

