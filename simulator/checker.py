"""Invariant checker: does the sum of what chargers may draw ever exceed a zone's capacity?

It looks at *limits held* by the chargers — their composite limit, i.e. what each car is
allowed to draw right now — rather than at what the cars happen to draw: a car drawing
less than its limit may ramp up at any moment, so a limit over capacity is already the
bug. Sampled continuously (every ~50 ms by :class:`~simulator.site.AsyncSite`, and on every
profile answer or session start/stop), pure and synchronous so a unit test can feed it a
known situation.

Per zone (its whole subtree) and per supply phase it sums the limits of chargers with a
running transaction, on the supply phases its car can load (a three-phase car on a
three-phase charger: all three; a single-phase charger or car: one), and, for zones with a
kW cap, the power (limit × 230 V × phases held). A dynamic zone's capacity is its limit minus the building's
own load at that instant, taken from the simulated meter's true value (not the lagged one).

Two exceptions are allowed, because no controller can avoid them:

- a new session holds the charger's default until its first TxProfile is answered; for up
  to ``new_session_grace_s`` its holding is left out of the sums;
- after a capacity *drop* (building load step, time-of-use), the zone may be over for up to
  ``reaction_grace_s`` while the controller measures, decides and the chargers answer.

Every breach is recorded with start, end, worst excess (A or kW), overshoot integral (A·s or
kW·s) and who held what at the worst moment. :meth:`InvariantChecker.assert_clean` raises
with a readable report; :meth:`InvariantChecker.report` gives the figures.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from simulator.composite import VOLTAGE_V

Phases = tuple[float, float, float]
PHASE_NAMES = ("L1", "L2", "L3")
KW = "kW"


@dataclass(frozen=True)
class Zone:
    """A node of the site's electrical tree.

    ``capacity_a`` is amps per phase (breaker rating), ``capacity_kw`` total power
    (subscribed demand); either or both. ``dynamic``: the building's own load, as measured
    by the zone's meter, comes off the capacity first.
    """

    zone_id: str
    parent: str | None = None
    capacity_a: float | None = None
    capacity_kw: float | None = None
    dynamic: bool = False


@dataclass(frozen=True)
class Holding:
    """What one connector with a running transaction may draw now, mapped to supply phases."""

    cp_id: str
    connector_id: int
    zone_id: str
    phases_a: Phases
    power_w: float
    transaction_id: int | None = None

    @classmethod
    def of(
        cls, cp_id: str, connector_id: int, zone_id: str, limit_a: float, supply_phases: Sequence[int],
        transaction_id: int | None = None,
    ) -> Holding:
        """A limit in amps per phase held on the given supply phases (0 = L1)."""
        phases = [0.0, 0.0, 0.0]
        for index in supply_phases:
            phases[index] = limit_a
        return cls(cp_id, connector_id, zone_id, (phases[0], phases[1], phases[2]),
                   limit_a * VOLTAGE_V * len(supply_phases), transaction_id)


@dataclass
class Breach:
    """One continuous period where a zone was over capacity on one phase (or in kW)."""

    zone_id: str
    quantity: str  # "L1", "L2", "L3" or "kW"
    start_s: float
    end_s: float | None = None
    worst_excess: float = 0.0
    integral: float = 0.0  # A·s (or kW·s)
    worst_at_s: float = 0.0
    capacity_at_worst: float = 0.0
    load_at_worst: float = 0.0
    holders_at_worst: list[tuple[str, int, float]] = field(default_factory=list)
    last_s: float = 0.0

    @property
    def duration_s(self) -> float:
        """How long it lasted (so far, when still open)."""
        return (self.end_s if self.end_s is not None else self.last_s) - self.start_s

    def describe(self, origin_s: float = 0.0) -> str:
        """One readable line, with the biggest holders (times relative to ``origin_s``)."""
        unit = "kW" if self.quantity == KW else "A"
        holders = ", ".join(f"{cp}#{conn}={value:.1f}" for cp, conn, value in self.holders_at_worst[:8])
        more = len(self.holders_at_worst) - 8
        return (
            f"zone {self.zone_id} {self.quantity}: over by up to {self.worst_excess:.2f} {unit} "
            f"({self.load_at_worst:.1f}/{self.capacity_at_worst:.1f} {unit}) for {self.duration_s:.2f} s, "
            f"{self.integral:.2f} {unit}·s, from t={self.start_s - origin_s:.2f} s"
            + ("" if self.end_s is not None else " (still open)")
            + f"; held by {holders}" + (f" and {more} more" if more > 0 else "")
        )


@dataclass
class SessionTiming:
    """When a session started and when its first TxProfile was answered."""

    start_s: float
    first_tx_profile_s: float | None = None
    first_status: str | None = None


@dataclass
class ZoneFigures:
    """Breach figures of one zone."""

    breaches: int = 0
    worst_excess: float = 0.0
    overshoot_integral: float = 0.0
    breach_seconds: float = 0.0


@dataclass
class CheckerReport:
    """Everything measured, ready to print or to assert on."""

    samples: int
    breaches: list[Breach]
    zones: dict[str, ZoneFigures]
    tx_profile_latency_s: list[float]
    sessions_without_tx_profile: int
    tolerated_samples: int
    origin_s: float = 0.0  # time of the first sample: breach times are printed relative to it

    @property
    def clean(self) -> bool:
        """No breach outside the allowed exceptions."""
        return not self.breaches

    def latency_summary(self) -> str:
        """Start → first TxProfile answered: median / max."""
        if not self.tx_profile_latency_s:
            return "no TxProfile answered"
        return (f"StartTransaction → first TxProfile: median {statistics.median(self.tx_profile_latency_s):.2f} s, "
                f"max {max(self.tx_profile_latency_s):.2f} s over {len(self.tx_profile_latency_s)} sessions")

    def __str__(self) -> str:
        """Readable multi-line report."""
        lines = [f"{self.samples} samples, {len(self.breaches)} breaches, "
                 f"{self.tolerated_samples} over-capacity samples tolerated (grace), "
                 f"{self.sessions_without_tx_profile} sessions without a TxProfile answer",
                 self.latency_summary()]
        for zone_id, figures in sorted(self.zones.items()):
            if figures.breaches:
                lines.append(f"  zone {zone_id}: {figures.breaches} breaches, worst {figures.worst_excess:.2f}, "
                             f"{figures.overshoot_integral:.2f} A·s, {figures.breach_seconds:.2f} s")
        lines.extend("  " + breach.describe(self.origin_s) for breach in self.breaches[:20])
        if len(self.breaches) > 20:
            lines.append(f"  ... and {len(self.breaches) - 20} more")
        return "\n".join(lines)


class InvariantChecker:
    """Samples holdings against the zone tree and records every breach."""

    def __init__(
        self,
        zones: Iterable[Zone],
        *,
        new_session_grace_s: float = 2.0,
        reaction_grace_s: float = 10.0,
        tolerance_a: float = 0.05,
        tolerance_kw: float = 0.05,
    ) -> None:
        """Zones in any order; parents must exist. Tolerances absorb the 0.1 A rounding of limits."""
        self.zones: dict[str, Zone] = {zone.zone_id: zone for zone in zones}
        self.new_session_grace_s = new_session_grace_s
        self.reaction_grace_s = reaction_grace_s
        self.tolerance_a = tolerance_a
        self.tolerance_kw = tolerance_kw
        self._ancestors = {zone_id: self._chain(zone_id) for zone_id in self.zones}
        self.breaches: list[Breach] = []
        self._open: dict[tuple[str, str], Breach] = {}
        self._last_capacity: dict[str, tuple[float, ...]] = {}
        self._drop_at: dict[str, float] = {}
        self.sessions: dict[tuple[str, int, int], SessionTiming] = {}
        self.samples = 0
        self.tolerated_samples = 0
        self._last_sample_s: float | None = None
        self.origin_s: float | None = None

    def _chain(self, zone_id: str) -> list[str]:
        """The zone and all its ancestors (its limits all apply to it)."""
        chain: list[str] = []
        current: str | None = zone_id
        while current is not None:
            if current in chain:
                raise ValueError(f"zone loop through {current}")
            if current not in self.zones:
                raise ValueError(f"unknown parent zone {current}")
            chain.append(current)
            current = self.zones[current].parent
        return chain

    # ---------------------------------------------------------------- events
    def transaction_started(self, cp_id: str, connector_id: int, transaction_id: int, at_s: float) -> None:
        """A session began: its default limit is tolerated for ``new_session_grace_s``."""
        self.sessions[(cp_id, connector_id, transaction_id)] = SessionTiming(at_s)

    def tx_profile_answered(
        self, cp_id: str, connector_id: int, transaction_id: int | None, status: str | None, at_s: float
    ) -> None:
        """A TxProfile was answered: the session's grace ends, latency is recorded."""
        for (cp, conn, tx), timing in self.sessions.items():
            if cp == cp_id and conn == connector_id and transaction_id in (None, tx):
                if timing.first_tx_profile_s is None:
                    timing.first_tx_profile_s, timing.first_status = at_s, status

    def set_capacity(
        self, zone_id: str, *, capacity_a: float | None = None, capacity_kw: float | None = None
    ) -> None:
        """Replace a zone's limits (time-of-use, an operator edit); a drop starts the reaction grace.

        Both limits are replaced: pass the one you keep too.
        """
        zone = self.zones[zone_id]
        self.zones[zone_id] = Zone(zone_id, zone.parent, capacity_a, capacity_kw, zone.dynamic)

    def _in_grace(self, holding: Holding, at_s: float) -> bool:
        if holding.transaction_id is None:
            return False
        timing = self.sessions.get((holding.cp_id, holding.connector_id, holding.transaction_id))
        return (timing is not None and timing.first_tx_profile_s is None
                and at_s - timing.start_s < self.new_session_grace_s)

    # ---------------------------------------------------------------- sampling
    def _capacities(self, zone: Zone, building_a: Phases | None) -> dict[str, float]:
        """Capacity per quantity ("L1".."L3", "kW") after the building's own load."""
        building = building_a if zone.dynamic and building_a is not None else (0.0, 0.0, 0.0)
        found: dict[str, float] = {}
        if zone.capacity_a is not None:
            for index, name in enumerate(PHASE_NAMES):
                found[name] = zone.capacity_a - building[index]
        if zone.capacity_kw is not None:
            found[KW] = zone.capacity_kw - sum(building) * VOLTAGE_V / 1000.0
        return found

    def observe(self, at_s: float, holdings: Iterable[Holding], building_a: Mapping[str, Phases] | None = None) -> None:
        """One sample at ``at_s``: sums per zone subtree and phase, breaches opened/extended/closed.

        ``building_a`` gives, per dynamic zone, the building's true load per phase now.
        """
        building_a = building_a or {}
        elapsed = 0.0 if self._last_sample_s is None else max(0.0, at_s - self._last_sample_s)
        self._last_sample_s = at_s
        if self.origin_s is None:
            self.origin_s = at_s
        self.samples += 1
        loads: dict[str, dict[str, float]] = {z: {"L1": 0.0, "L2": 0.0, "L3": 0.0, KW: 0.0} for z in self.zones}
        holders: dict[str, list[tuple[str, int, Holding]]] = {z: [] for z in self.zones}
        for holding in holdings:
            if holding.zone_id not in self.zones or self._in_grace(holding, at_s):
                continue
            for zone_id in self._ancestors[holding.zone_id]:
                zone_load = loads[zone_id]
                zone_load["L1"] += holding.phases_a[0]
                zone_load["L2"] += holding.phases_a[1]
                zone_load["L3"] += holding.phases_a[2]
                zone_load[KW] += holding.power_w / 1000.0
                holders[zone_id].append((holding.cp_id, holding.connector_id, holding))
        still_open: set[tuple[str, str]] = set()
        for zone_id, zone in self.zones.items():
            capacities = self._capacities(zone, building_a.get(zone_id))
            self._note_drop(zone_id, capacities, at_s)
            tolerated = at_s - self._drop_at.get(zone_id, float("-inf")) < self.reaction_grace_s
            for quantity, capacity in capacities.items():
                tolerance = self.tolerance_kw if quantity == KW else self.tolerance_a
                excess = loads[zone_id][quantity] - capacity
                if excess <= tolerance:
                    continue
                if tolerated:
                    self.tolerated_samples += 1
                    continue
                key = (zone_id, quantity)
                still_open.add(key)
                self._extend(key, at_s, elapsed, excess, capacity, loads[zone_id][quantity], holders[zone_id])
        for key in list(self._open):
            if key not in still_open:
                self._open.pop(key).end_s = at_s

    def _note_drop(self, zone_id: str, capacities: Mapping[str, float], at_s: float) -> None:
        """Remember when a zone's capacity went down (its reaction grace starts then)."""
        current = tuple(capacities.values())
        previous = self._last_capacity.get(zone_id)
        if previous is not None and len(previous) == len(current):
            if any(now < before - self.tolerance_a for now, before in zip(current, previous, strict=True)):
                self._drop_at[zone_id] = at_s
        self._last_capacity[zone_id] = current

    def _extend(
        self, key: tuple[str, str], at_s: float, elapsed: float, excess: float, capacity: float, load: float,
        holders: Sequence[tuple[str, int, Holding]],
    ) -> None:
        breach = self._open.get(key)
        if breach is None:
            breach = Breach(zone_id=key[0], quantity=key[1], start_s=at_s)
            self._open[key] = breach
            self.breaches.append(breach)
        else:
            breach.integral += excess * elapsed
        breach.last_s = at_s
        if excess > breach.worst_excess:
            index = PHASE_NAMES.index(key[1]) if key[1] != KW else None
            breach.worst_excess, breach.worst_at_s = excess, at_s
            breach.capacity_at_worst, breach.load_at_worst = capacity, load
            values = [
                (cp, conn, h.power_w / 1000.0 if index is None else h.phases_a[index]) for cp, conn, h in holders
            ]
            breach.holders_at_worst = sorted((v for v in values if v[2] > 0), key=lambda v: -v[2])

    # ---------------------------------------------------------------- results
    def report(self) -> CheckerReport:
        """Figures so far: breaches, per-zone worst excess, integral and duration, TxProfile latency."""
        zones = {zone_id: ZoneFigures() for zone_id in self.zones}
        for breach in self.breaches:
            figures = zones[breach.zone_id]
            figures.breaches += 1
            figures.worst_excess = max(figures.worst_excess, breach.worst_excess)
            figures.overshoot_integral += breach.integral
            figures.breach_seconds += breach.duration_s
        latencies = [t.first_tx_profile_s - t.start_s for t in self.sessions.values()
                     if t.first_tx_profile_s is not None]
        missing = sum(1 for t in self.sessions.values() if t.first_tx_profile_s is None)
        return CheckerReport(self.samples, list(self.breaches), zones, latencies, missing, self.tolerated_samples,
                             self.origin_s or 0.0)

    def assert_clean(self) -> None:
        """Raise AssertionError with the readable report when any breach was recorded."""
        if self.breaches:
            raise AssertionError("zone capacity exceeded:\n" + str(self.report()))
