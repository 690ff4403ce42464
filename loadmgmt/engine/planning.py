"""plan(): which limits to send this tick so that what chargers hold never exceeds a zone.

The allocation says what each connector *should* get. This step decides what may be *sent* now,
given what each connector may be *holding*: `held_a` = max(the limit it accepted, every limit
sent to it whose answer has not settled). The invariant it keeps, per constraint (zone and phase,
or zone power):

    sum of held limits <= capacity      (if it held before the tick, it holds after it)

by construction:
- the hysteresis filters changes of the allocation; a gap that stays (the same value wanted two
  ticks running) is caught up, so a limit once capped by room reaches its share;
- a decrease never raises what is held (the old, higher limit stays counted until the charger
  accepts the new one), so decreases are always safe to send, and they go at once;
- an increase is sent only into room that exists *now*, with every other connector counted at
  what it holds; the increase is counted as held from the moment it is sent. An increase that
  has no room waits for the decreases that pay for it, and those decreases are then sent even
  when they are smaller than the hysteresis;
- answers only ever lower what is held (Accepted: the new value replaces max(old, new);
  Rejected: the old one stays; no answer: the higher of both stays counted).

A new session holds the charger's default until its first own profile is answered; that profile
is sent at once, capped to the room left by the others (0 = wait paused), so the exception lasts
one round trip. Pure: no Django, no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .model import MIN_SIGNAL_A, Zone
from .network import Network, build_network, ceil_units, floor_units

DECREASE = "decrease"
INCREASE = "increase"
FIRST = "first"


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """Something that holds current in the site: a session's connector, or a charger's default.

    Limits are amps per phase on each of `phases`. `count` is how many connectors the limit
    applies to at once (a TxDefaultProfile on connector 0 applies to every connector).
    """

    id: str
    zone_id: str
    phases: tuple[int, ...]
    held_a: float  # max(in force, unsettled): what it may draw now
    wanted_a: float = 0.0  # the allocation's decision; 0 = paused
    controllable: bool = True  # False: offline or isolated, its held limit is only reserved
    can_send: bool = True  # False: in backoff after a failure
    may_raise: bool = True  # False: the charger stopped answering; only decreases go to it
    # The allocation wanted the same value at the previous tick: the gap to what is held is not
    # noise but a limit that could not be sent yet (capped by room, refused, lost): catch up.
    wanted_stable: bool = False
    first: bool = False  # no profile of its own yet: the first one goes at once, capped to the room
    in_flight_a: float | None = None  # latest limit sent and not yet answered
    min_a: float = MIN_SIGNAL_A
    count: int = 1
    priority: int = 1  # lower goes first when room is short (0 = VIP)
    voltage_v: float = 230.0

    def __post_init__(self) -> None:
        if not self.phases or any(p not in (0, 1, 2) for p in self.phases):
            raise ValueError(f"holder {self.id!r}: phases must be a non-empty subset of 0, 1, 2")
        for name in ("held_a", "wanted_a", "min_a"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value != value or value < 0 or value == float("inf"):
                raise ValueError(f"holder {self.id!r}: {name} must be a finite number >= 0")
        if self.count < 1:
            raise ValueError(f"holder {self.id!r}: count must be >= 1")


@dataclass(frozen=True, slots=True)
class Send:
    """A limit to send now: `limit_a` 0.0 means pause."""

    holder_id: str
    limit_a: float
    kind: str  # DECREASE, INCREASE or FIRST


@dataclass(slots=True)
class Plan:
    sends: list[Send]  # decreases first, then increases
    waiting: dict[str, str] = field(default_factory=dict)  # why a holder's wanted value is not sent
    over: list[str] = field(default_factory=list)  # constraints over capacity at what is held now


@dataclass(slots=True)
class _Row:
    holder: Holder
    pairs: tuple[tuple[int, int], ...]
    held: int  # deci-amps, rounded up (what it may draw is never under-counted)
    wanted: int  # deci-amps, rounded down
    min_units: int


def plan(zones: Sequence[Zone], holders: Sequence[Holder], *, hysteresis_a: float) -> Plan:
    """The sends of this tick; see the module docstring for the invariant they keep."""
    net = build_network(zones)
    rows = [_row(net, h) for h in holders]
    usage = [0] * len(net.cap)
    for row in rows:
        _add(usage, row, row.held)
    hysteresis = max(1, floor_units(hysteresis_a, 10))
    result = Plan(sends=[])
    result.over = [net.cons_label[c] for c, used in enumerate(usage) if used > net.cap[c]]
    over = {c for c, used in enumerate(usage) if used > net.cap[c]}
    increases, blocked = _increases(rows, net, usage, hysteresis, result)
    result.sends = _decreases(rows, over, blocked, hysteresis, result) + increases
    return result


def _row(net: Network, holder: Holder) -> _Row:
    zone = net.index.get(holder.zone_id)
    pairs = () if zone is None else net.sig_pairs[net.signature(zone, holder.phases, ceil_units(holder.voltage_v, 10))]
    wanted = floor_units(holder.wanted_a, 10)
    if zone is None:
        wanted = 0  # a connector outside the known tree never gets more than it holds
    return _Row(holder, pairs, ceil_units(holder.held_a, 10), wanted, ceil_units(holder.min_a, 10))


def _add(usage: list[int], row: _Row, units: int) -> None:
    for c, k in row.pairs:
        usage[c] += k * units * row.holder.count


def _room(usage: list[int], net: Network, row: _Row) -> int | None:
    """Deci-amps this holder could rise by without any constraint going over (None: unlimited)."""
    room: int | None = None
    for c, k in row.pairs:
        free = (net.cap[c] - usage[c]) // (k * row.holder.count)
        room = free if room is None else min(room, free)
    return room


def _in_flight_units(holder: Holder) -> int | None:
    return None if holder.in_flight_a is None else floor_units(holder.in_flight_a, 10)


def _increases(
    rows: list[_Row], net: Network, usage: list[int], hysteresis: int, result: Plan
) -> tuple[list[Send], set[int]]:
    """Increases (and first profiles) into the room that exists now; the constraints that blocked."""
    sends: list[Send] = []
    blocked: set[int] = set()
    candidates = [r for r in rows if r.holder.controllable and (r.wanted > r.held or r.holder.first)]
    for row in sorted(candidates, key=lambda r: (r.holder.priority, r.held, r.holder.id)):
        holder = row.holder
        if holder.first and holder.can_send:
            first = _first_profile(row, net, usage, blocked, result)
            if first.limit_a * 10 <= row.held or holder.may_raise:
                sends.append(first)
            else:
                result.waiting[holder.id] = "the charger stopped answering: only lower limits are sent to it"
            continue
        if not holder.may_raise:
            result.waiting[holder.id] = "the charger stopped answering: only lower limits are sent to it"
            continue
        if not holder.can_send or holder.in_flight_a is not None:
            result.waiting[holder.id] = "waiting for the charger's answer or a retry"
            continue
        resuming = row.held == 0
        if not resuming and row.wanted - row.held < hysteresis and not holder.wanted_stable:
            result.waiting[holder.id] = "change smaller than the hysteresis"
            continue
        room = _room(usage, net, row)
        allowed = row.wanted if room is None else min(row.wanted, row.held + room)
        step_too_small = allowed < row.wanted and allowed - row.held < (1 if holder.wanted_stable else hysteresis)
        if allowed <= row.held or (resuming and allowed < row.min_units) or step_too_small:
            blocked |= _blocking(usage, net, row, max(row.wanted - row.held, row.min_units - row.held, 1))
            result.waiting[holder.id] = _waiting_text(net, usage, row)
            continue
        _add(usage, row, allowed - row.held)
        sends.append(Send(holder.id, allowed / 10, INCREASE))
        if allowed < row.wanted:
            blocked |= _blocking(usage, net, row, row.wanted - allowed)
            result.waiting[holder.id] = _waiting_text(net, usage, row)
    return sends, blocked


def _first_profile(row: _Row, net: Network, usage: list[int], blocked: set[int], result: Plan) -> Send:
    """A new session's first own profile: at once, capped to the room the others leave (0 = wait).

    Its default is already counted in `usage`, so the room is what the constraint has beyond it.
    """
    room = _room(usage, net, row)
    allowed = row.wanted if room is None else min(row.wanted, row.held + room)
    value = allowed if allowed >= row.min_units else 0
    if value > row.held:
        _add(usage, row, value - row.held)
    if value < row.wanted:
        blocked |= _blocking(usage, net, row, row.wanted - max(value, row.held) or 1)
        result.waiting[row.holder.id] = _waiting_text(net, usage, row)
    return Send(row.holder.id, value / 10, FIRST)


def _blocking(usage: list[int], net: Network, row: _Row, need: int) -> set[int]:
    """The constraints on the holder's path without room for `need` more deci-amps."""
    return {c for c, k in row.pairs if usage[c] + k * need * row.holder.count > net.cap[c]}


def _waiting_text(net: Network, usage: list[int], row: _Row) -> str:
    tight = [net.cons_label[c] for c, k in row.pairs if usage[c] + k * row.holder.count > net.cap[c]]
    where = tight[0] if tight else "its zone"
    return f"waiting for other chargers to confirm lower limits ({where})"


def _decreases(rows: list[_Row], over: set[int], blocked: set[int], hysteresis: int, result: Plan) -> list[Send]:
    """Every decrease worth sending: past the hysteresis, a pause, or needed by a tight constraint.

    A constraint over capacity needs its decreases now, backoff or not; one that blocks an
    increase needs them too, but a charger in backoff is not asked again before its retry time.
    """
    sends: list[Send] = []
    for row in rows:
        holder = row.holder
        if not holder.controllable or holder.first or row.wanted >= row.held:
            continue
        if _in_flight_units(holder) == row.wanted:
            continue
        urgent = any(c in over for c, _k in row.pairs)
        needed = urgent or any(c in blocked for c, _k in row.pairs)
        if not (needed or row.wanted == 0 or row.held - row.wanted >= hysteresis or holder.wanted_stable):
            result.waiting.setdefault(holder.id, "change smaller than the hysteresis")
            continue
        if not holder.can_send and not urgent:
            result.waiting.setdefault(holder.id, "waiting for a retry after the charger's last answer")
            continue
        sends.append(Send(holder.id, row.wanted / 10, DECREASE))
    return sends


def breaches(zones: Sequence[Zone], holders: Sequence[Holder]) -> list[str]:
    """Constraints whose held usage exceeds their capacity (empty when the invariant holds)."""
    net = build_network(zones)
    usage = [0] * len(net.cap)
    for holder in holders:
        row = _row(net, holder)
        _add(usage, row, row.held)
    return [f"{net.cons_label[c]}: {used} > {net.cap[c]}" for c, used in enumerate(usage) if used > net.cap[c]]
