"""The zone tree turned into a flat table of integer constraints.

Everything is counted in integers so that "the sum of limits never exceeds the capacity" holds
exactly, not up to float noise: currents in deci-amps (0.1 A, the resolution OCPP allows), power in
centiwatts, voltage in decivolts rounded *up* (so the engine never under-counts power).
A session's constraints are the (zone, phase) amp limits and (zone) power limits on the path from
its zone to the root; sessions with the same zone, phases and voltage share one "signature" and
one precomputed list of (constraint, coefficient) pairs, which keeps the hot loops short.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .model import PHASE_NAMES, Zone

_EPS = 1e-6  # absorbs binary representation error (15.7 * 10 == 156.99999...) in conversions

Pairs = tuple[tuple[int, int], ...]


def floor_units(value: float, scale: int) -> int:
    """Round a quantity down to the integer grid (limits, capacities: never round up)."""
    return math.floor(value * scale + _EPS)


def ceil_units(value: float, scale: int) -> int:
    """Round a quantity up to the integer grid (minimum currents, voltages: never round down)."""
    return math.ceil(value * scale - _EPS)


def capacity_units(value: float | None, scale: int) -> int | None:
    """Capacity on the grid; NaN or -inf mean "unknown" and become 0, never unlimited."""
    if value is None or value == math.inf:
        return None
    if math.isnan(value) or value == -math.inf:
        return 0
    return floor_units(value, scale)


@dataclass(slots=True)
class Network:
    """Constraint table of one zone tree: capacities and labels indexed by constraint id."""

    zone_ids: list[str]
    index: dict[str, int]
    paths: list[tuple[int, ...]]  # zone indices from the zone itself up to its root
    amp_cid: list[tuple[int | None, int | None, int | None]]  # per zone: constraint id per phase
    watt_cid: list[int | None]  # per zone: constraint id of the power limit
    cap: list[int]  # per constraint: deci-amps, or centiwatts for a power limit
    cons_zone: list[int]
    cons_label: list[str]
    signatures: dict[tuple[int, tuple[int, ...], int], int] = field(default_factory=dict)
    sig_pairs: list[Pairs] = field(default_factory=list)
    sig_info: list[tuple[int, tuple[int, ...], int]] = field(default_factory=list)

    def signature(self, zone: int, phases: tuple[int, ...], volt_dv: int) -> int:
        """Index of the (zone, phases, voltage) class, creating its constraint pairs once."""
        key = (zone, phases, volt_dv)
        sig = self.signatures.get(key)
        if sig is None:
            sig = len(self.sig_pairs)
            self.signatures[key] = sig
            self.sig_pairs.append(self._pairs(zone, phases, volt_dv))
            self.sig_info.append(key)
        return sig

    def _pairs(self, zone: int, phases: tuple[int, ...], volt_dv: int) -> Pairs:
        """(constraint, units per deci-amp) from the zone up: 1 for amps, centiwatts for power."""
        pairs: list[tuple[int, int]] = []
        for z in self.paths[zone]:
            amp = self.amp_cid[z]
            pairs.extend((cid, 1) for cid in (amp[p] for p in phases) if cid is not None)
            watt = self.watt_cid[z]
            if watt is not None:
                pairs.append((watt, len(phases) * volt_dv))
        return tuple(pairs)


def build_network(zones: Iterable[Zone]) -> Network:
    """Validate the tree (unique ids, known parents, no cycle) and index its constraints.

    Zones are sorted by id so that constraint ids, and therefore tie-breaks, do not depend on the
    order the caller happened to list them in.
    """
    ordered = sorted(zones, key=lambda z: z.id)
    index = {z.id: i for i, z in enumerate(ordered)}
    if len(index) != len(ordered):
        raise ValueError("zone ids must be unique")
    parents = [_parent_index(z, index) for z in ordered]
    net = Network(
        zone_ids=[z.id for z in ordered],
        index=index,
        paths=_paths(parents, ordered),
        amp_cid=[],
        watt_cid=[],
        cap=[],
        cons_zone=[],
        cons_label=[],
    )
    for i, zone in enumerate(ordered):
        _add_constraints(net, i, zone)
    return net


def _parent_index(zone: Zone, index: dict[str, int]) -> int:
    """-1 for a root; an unknown parent is a configuration error, not a silent extra root."""
    if zone.parent_id is None:
        return -1
    if zone.parent_id not in index:
        raise ValueError(f"zone {zone.id!r} has unknown parent {zone.parent_id!r}")
    return index[zone.parent_id]


def _paths(parents: list[int], ordered: list[Zone]) -> list[tuple[int, ...]]:
    """Path to the root for every zone, memoised; a cycle would make a zone its own ancestor."""
    paths: dict[int, tuple[int, ...]] = {-1: ()}
    for start in range(len(parents)):
        chain: list[int] = []
        node = start
        while node not in paths:
            if node in chain:
                raise ValueError(f"zone tree has a cycle through {ordered[node].id!r}")
            chain.append(node)
            node = parents[node]
        for member in reversed(chain):
            paths[member] = (member, *paths[parents[member]])
    return [paths[i] for i in range(len(parents))]


def _add_constraints(net: Network, zone_index: int, zone: Zone) -> None:
    """One constraint per limited phase and one for a power limit; `None` adds nothing."""
    amp: list[int | None] = [None, None, None]
    for phase in range(3):
        value = None if zone.capacity_a is None else capacity_units(zone.capacity_a[phase], 10)
        if value is not None:
            amp[phase] = _new_constraint(net, zone_index, value, f"zone:{zone.label} phase {PHASE_NAMES[phase]}")
    net.amp_cid.append((amp[0], amp[1], amp[2]))
    watts = capacity_units(zone.capacity_w, 100)
    net.watt_cid.append(None if watts is None else _new_constraint(net, zone_index, watts, f"zone:{zone.label} power"))


def _new_constraint(net: Network, zone_index: int, cap: int, label: str) -> int:
    """Register a constraint; its label is what the dashboard shows as the binding constraint."""
    net.cap.append(cap)
    net.cons_zone.append(zone_index)
    net.cons_label.append(label)
    return len(net.cap) - 1


def demand(
    members: Iterable[int], values: Sequence[int], sig_of: Sequence[int], sig_pairs: Sequence[Pairs], n_cons: int
) -> list[int]:
    """Per-constraint usage if every member took `values[i]`: summed per signature first."""
    per_sig: dict[int, int] = {}
    for i in members:
        sig = sig_of[i]
        per_sig[sig] = per_sig.get(sig, 0) + values[i]
    total = [0] * n_cons
    for sig, value in per_sig.items():
        for c, k in sig_pairs[sig]:
            total[c] += k * value
    return total


def restrict(sig_pairs: Sequence[Pairs], keep: Sequence[bool]) -> list[Pairs]:
    """The pairs of every signature limited to constraints that can matter.

    A constraint that holds even when everyone concerned takes the most they could can never
    bind, so dropping it from the hot loops changes no result and saves most of the work on a
    site where only a few boards are tight.
    """
    return [tuple(pair for pair in pairs if keep[pair[0]]) for pairs in sig_pairs]
