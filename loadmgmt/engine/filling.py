"""Max-min fair progressive filling ("water filling") over the constraint table.

Picture one water level L rising for every session at once: a session's current is L clipped to
[its minimum, its ceiling]. A session stops rising when it reaches its ceiling, or when one of the
constraints on its path fills up; then every session still rising through that constraint stops
at the same L. That is what makes sessions sharing a bottleneck get equal current, and it is
max-min fair: nobody could get more without taking it from someone who has no more than them.

It is event driven so that it costs O(n log n) rather than O(n^2):
- For each constraint, usage(L) = base + w * L, where base holds the sessions not rising (at their
  minimum or stopped) and w the coefficients of the rising ones. Its fill level is
  (cap - base) // w, computed in integers so a filled constraint is never exceeded.
- Session events (start rising at the minimum, stop at the ceiling) are pre-sorted and batched per
  (level, signature), so a whole group of like sessions costs one update per constraint.
- Fill levels live in a heap as lower bounds: stopping sessions only raises other constraints'
  levels, so a popped entry is re-checked and pushed back when it has gone stale; only a session
  starting to rise lowers a level, and then a fresh entry is pushed.
Every group of sessions shares all its constraints, so it is frozen at most once by a filled
constraint: the total work is O((n + groups x path length) log).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Pairs = tuple[tuple[int, int], ...]

FLOOR, RISING, FROZEN = 0, 1, 2
OWN_CEILING = -1  # binding marker: the session stopped at its own ceiling
_CEILING_EVENT, _RISE_EVENT = 0, 1  # at equal level, reaching a ceiling is reported first


@dataclass(slots=True)
class Fill:
    """Result of a filling pass, indexed by session: deci-amps and the stopping constraint."""

    value: dict[int, int]
    binding: dict[int, int]
    full: list[bool]  # per constraint: filled up during this pass (or an earlier one)


class _Filler:
    """State of one filling pass. A class only to keep each step a short method."""

    def __init__(self, sig_pairs: Sequence[Pairs], cap: Sequence[int], base: list[int], full: list[bool]) -> None:
        self.sig_pairs = sig_pairs
        self.cap = cap
        self.base = base
        self.w = [0] * len(cap)
        self.full = full
        self.heap: list[tuple[int, int]] = []
        self.dirty: set[int] = set()  # constraints whose fill level dropped at the current level
        self.dirty_level = 0
        self.state: dict[int, int] = {}
        self.fill = Fill(value={}, binding={}, full=full)
        self.groups: dict[int, list[int]] = {}
        self.done: set[int] = set()  # groups already frozen by a filled constraint
        self.cons_groups: dict[int, list[int]] = {}

    def setup(
        self, members: Sequence[int], sig_of: Sequence[int], lo: Sequence[int], hi: Sequence[int]
    ) -> list[tuple[tuple[int, int, int], list[int]]]:
        """Put every member at its minimum and return the sorted, batched session events."""
        batches: dict[tuple[int, int, int], list[int]] = {}
        value, binding, state, groups = self.fill.value, self.fill.binding, self.state, self.groups
        already_full = self._already_full(sig_of[i] for i in members)
        for i in members:
            sig = sig_of[i]
            low, high = lo[i], hi[i]
            if sig in already_full:  # a previous pass filled one of its constraints: stay at minimum
                value[i] = low
                state[i] = FROZEN
                binding[i] = already_full[sig]
                continue
            if high <= low or not self.sig_pairs[sig]:  # fixed, or nothing can bind it
                value[i] = max(high, low)
                state[i] = FROZEN
                binding[i] = OWN_CEILING
                continue
            value[i] = low
            state[i] = FLOOR
            groups.setdefault(sig, []).append(i)
            batches.setdefault((low, _RISE_EVENT, sig), []).append(i)
            batches.setdefault((high, _CEILING_EVENT, sig), []).append(i)
        for sig in groups:
            for c, _k in self.sig_pairs[sig]:
                self.cons_groups.setdefault(c, []).append(sig)
        return sorted(batches.items())

    def _already_full(self, sigs: Iterable[int]) -> dict[int, int]:
        """Signatures behind a constraint filled by an earlier pass, with that constraint.

        In priority mode the VIP pass may leave a rounding remainder (< 0.1 A per VIP) in a filled
        constraint; giving it to a non-VIP would put that non-VIP above the VIPs it shares with.
        """
        full = self.full
        if not any(full):
            return {}
        found: dict[int, int] = {}
        for sig in set(sigs):
            c = next((c for c, _k in self.sig_pairs[sig] if full[c]), None)
            if c is not None:
                found[sig] = c
        return found

    def run(self, events: list[tuple[tuple[int, int, int], list[int]]]) -> Fill:
        """Alternate between filled constraints and session events in level order."""
        for (level, kind, sig), sessions in events:
            self._fill_below(level)
            if kind == _RISE_EVENT:
                self._rise(sig, sessions, level)
            else:
                self._reach_ceiling(sig, sessions, level)
        self._fill_below(None)
        return self.fill

    def _fill_below(self, limit: int | None) -> None:
        """Freeze every constraint that fills up strictly below `limit` (None: at any level)."""
        if self.dirty and (limit is None or limit > self.dirty_level):
            self._push_dirty()
        heap, cap, base, w, full = self.heap, self.cap, self.base, self.w, self.full
        while heap and (limit is None or heap[0][0] < limit):
            level, c = heapq.heappop(heap)
            if full[c] or w[c] == 0:
                continue
            true_level = (cap[c] - base[c]) // w[c]
            if true_level != level:
                heapq.heappush(heap, (true_level, c))
                continue
            full[c] = True
            for sig in self.cons_groups[c]:
                if sig not in self.done:
                    self.done.add(sig)
                    self._freeze_group(sig, c, level)

    def _push_dirty(self) -> None:
        """One fresh heap entry per constraint whose level dropped, however many groups rose."""
        cap, base, w, full, heap = self.cap, self.base, self.w, self.full, self.heap
        for c in self.dirty:
            if not full[c] and w[c]:
                heapq.heappush(heap, ((cap[c] - base[c]) // w[c], c))
        self.dirty.clear()

    def _freeze_group(self, sig: int, c: int, level: int) -> None:
        """Stop every session of a group that is still below its ceiling, at `level`."""
        state, value, binding = self.state, self.fill.value, self.fill.binding
        rising = 0
        for i in self.groups[sig]:
            st = state[i]
            if st == FROZEN:
                continue
            state[i] = FROZEN
            binding[i] = c
            if st == RISING:
                value[i] = level
                rising += 1
        if rising:
            self._shift(sig, level * rising, -rising)

    def _rise(self, sig: int, sessions: list[int], level: int) -> None:
        """Sessions whose minimum the level has reached start rising with it."""
        state = self.state
        count = 0
        for i in sessions:
            if state[i] == FLOOR:
                state[i] = RISING
                count += 1
        if not count:
            return
        self._shift(sig, -level * count, count)
        # Entries are pushed lazily (_push_dirty) before the heap is next read below a higher
        # level; every group rising at this same level has been applied by then.
        self.dirty.update(c for c, _k in self.sig_pairs[sig])
        self.dirty_level = level

    def _reach_ceiling(self, sig: int, sessions: list[int], level: int) -> None:
        """Rising sessions that reach their own ceiling stop there."""
        state, value, binding = self.state, self.fill.value, self.fill.binding
        count = 0
        for i in sessions:
            if state[i] == RISING:
                state[i] = FROZEN
                value[i] = level
                binding[i] = OWN_CEILING
                count += 1
        if count:
            self._shift(sig, level * count, -count)

    def _shift(self, sig: int, base_delta: int, w_delta: int) -> None:
        """Apply a group's change (in deci-amps and session count) to all its constraints."""
        base, w = self.base, self.w
        for c, k in self.sig_pairs[sig]:
            base[c] += k * base_delta
            w[c] += k * w_delta


def water_fill(
    members: Sequence[int],
    sig_of: Sequence[int],
    sig_pairs: Sequence[Pairs],
    lo: Sequence[int],
    hi: Sequence[int],
    cap: Sequence[int],
    base: list[int],
    full: list[bool] | None = None,
) -> Fill:
    """Fill `members` from their minimums up to their ceilings; others stay as counted in `base`.

    `base` must hold, per constraint, the usage of every session at its current value (members at
    their minimum) and must fit the capacities; it is updated in place to the usage after filling,
    so a second pass (non-VIPs after VIPs) can start from it, passing the first pass's `full`.
    """
    filler = _Filler(sig_pairs, cap, base, [False] * len(cap) if full is None else full)
    events = filler.setup(members, sig_of, lo, hi)
    return filler.run(events)
