"""Value types the engine takes and gives back.

They are plain frozen dataclasses so the control loop can build them from the ORM, the tests can
build them by hand, and nothing here depends on Django. Units are in the field names because a
mix-up between amps per phase and watts is exactly the bug that trips a breaker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Mode = Literal["equal", "priority"]
Shedding = Literal["energy", "connection_time"]
PhaseCapacity = tuple[float | None, float | None, float | None]

MODES: tuple[str, ...] = ("equal", "priority")
SHEDDINGS: tuple[str, ...] = ("energy", "connection_time")
THREE_PHASE: tuple[int, ...] = (0, 1, 2)
PHASE_NAMES: tuple[str, ...] = ("L1", "L2", "L3")
MIN_SIGNAL_A = 6.0  # IEC 61851-1: the lowest current a charger can signal to the car

# Binding-constraint values that are not a zone constraint (see SessionLimit.binding).
SESSION_MAX = "session max"
CHARGER_MAX = "charger max"
MEASURED_DRAW = "measured draw"
SHED = "shed"
MIN_OFF_HOLD = "min-off hold"
UNKNOWN_ZONE = "unknown zone"


def _require(condition: bool, message: str) -> None:
    """Raise ValueError: a bad input must fail loudly where it is built, not inside a tick."""
    if not condition:
        raise ValueError(message)


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Zone:
    """A node of the site tree with the capacity available to EV charging in it right now.

    The caller has already applied time-of-use, subtracted the measured non-EV load and added PV,
    so the engine only has to share these numbers. `None` means "no limit of that kind here"; a
    NaN is read as 0 because an unknown capacity must never become an unlimited one.
    """

    id: str
    parent_id: str | None = None
    capacity_a: PhaseCapacity | None = None  # available amps per phase L1, L2, L3
    capacity_w: float | None = None  # available total active power
    name: str = ""

    def __post_init__(self) -> None:
        _require(bool(self.id), "zone id must not be empty")
        _require(self.parent_id != self.id, f"zone {self.id!r} cannot be its own parent")
        _require(self.capacity_a is None or len(self.capacity_a) == 3, "capacity_a needs one value per phase")
        if self.capacity_a is not None:
            object.__setattr__(self, "capacity_a", tuple(self.capacity_a))  # a list from the caller is fine too

    @property
    def label(self) -> str:
        """The name shown to people in a binding constraint, falling back to the id."""
        return self.name or self.id


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """One car charging (or waiting, paused) on one connector, as seen at this tick.

    `paused` and `state_since` are the state decided at the previous tick; the engine needs them
    to keep pause/run decisions sticky (minimum on/off times). `offered_a` is the limit currently
    in force at the charger, used to tell "the car draws less than offered" from "the car follows
    the offer" and to detect overdraw.
    """

    id: str
    zone_id: str
    max_a: float  # what this session may take (cable, car or user limit), amps per phase
    phases: tuple[int, ...] = THREE_PHASE  # supply phases loaded: (0, 1, 2) or e.g. (1,) for L2
    min_a: float = MIN_SIGNAL_A
    charger_max_a: float | None = None  # hardware rating of the charger, if lower than max_a
    measured_a: float | None = None  # highest measured phase current of this session
    offered_a: float | None = None  # limit currently in force at the charger
    vip: bool = False
    energy_wh: float = 0.0
    connected_at: float = 0.0  # epoch seconds
    # Seconds the session has been allowed to charge (paused time excluded). The connection-time
    # policy ranks by it: a paused car does not age, so the others overtake it and a rotation
    # gives it its turn. None: counted from `connected_at` (no pause history known).
    charged_s: float | None = None
    paused: bool = False
    state_since: float = 0.0  # epoch seconds of the last paused <-> running change
    voltage_v: float = 230.0

    def __post_init__(self) -> None:
        _require(bool(self.id), "session id must not be empty")
        _require(len(self.phases) > 0, f"session {self.id!r} loads no phase")
        _require(len(set(self.phases)) == len(self.phases), f"session {self.id!r} lists a phase twice")
        _require(all(p in THREE_PHASE for p in self.phases), f"session {self.id!r}: phases are 0, 1, 2")
        _require(_finite(self.min_a) and self.min_a > 0, f"session {self.id!r}: min_a must be > 0")
        _require(_finite(self.max_a) and self.max_a >= 0, f"session {self.id!r}: max_a must be >= 0")
        _require(_finite(self.voltage_v) and self.voltage_v > 0, f"session {self.id!r}: voltage must be > 0")
        charger_ok = self.charger_max_a is None or (_finite(self.charger_max_a) and self.charger_max_a >= 0)
        _require(charger_ok, f"session {self.id!r}: charger_max_a must be >= 0")
        for name in ("energy_wh", "connected_at", "state_since"):
            _require(_finite(getattr(self, name)), f"session {self.id!r}: {name} must be a finite number")
        charged_ok = self.charged_s is None or (_finite(self.charged_s) and self.charged_s >= 0)
        _require(charged_ok, f"session {self.id!r}: charged_s must be a finite number >= 0")
        # One canonical, hashable form: (2, 0) and [0, 2] are the same wiring.
        object.__setattr__(self, "phases", tuple(sorted(self.phases)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """How to share and shed, plus the state the rotation needs (`last_rotation_at`)."""

    mode: Mode = "equal"
    shedding: Shedding = "energy"
    rotation_period_s: float = 900.0
    min_on_s: float = 300.0
    min_off_s: float = 300.0
    unused_margin_a: float = 2.0  # headroom kept above a car's measured draw when capping it
    overdraw_tolerance_a: float = 2.0
    last_rotation_at: float | None = None

    def __post_init__(self) -> None:
        _require(self.mode in MODES, f"mode must be one of {MODES}")
        _require(self.shedding in SHEDDINGS, f"shedding must be one of {SHEDDINGS}")
        for name in ("rotation_period_s", "min_on_s", "min_off_s", "unused_margin_a", "overdraw_tolerance_a"):
            value = getattr(self, name)
            _require(_finite(value) and value >= 0, f"{name} must be a finite number >= 0")


@dataclass(slots=True, kw_only=True)
class SessionLimit:
    """The decision for one session and the reason for it, for the charger and the dashboard.

    Not frozen only because a frozen dataclass costs 2.5x more to build and allocate() builds one
    per session per tick; the engine never reads it back, treat it as read-only.

    `binding` is what stopped the current from going higher (or why the session is paused):
    "zone:<label> phase L<n>", "zone:<label> power", "session max", "charger max",
    "measured draw", "shed", "min-off hold" or "unknown zone". `zone_id` names the zone of a
    zone binding, or the zone that had no room for a shed session's minimum.
    """

    limit_a: float  # amps per phase, rounded down to 0.1 A; 0.0 when paused
    paused: bool
    binding: str
    overdraw: bool  # the car draws more than it was offered plus the tolerance
    zone_id: str | None
    max_a: float  # the ceiling this session was filled up to (after charger max and measured draw)
    state_since: float  # to store for the next tick: unchanged unless paused/running flipped


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneUsage:
    """What the allocation uses in a zone's subtree, so the dashboard can show headroom."""

    used_a: tuple[float, float, float]  # sum of limits per phase
    used_w: float  # sum of phases x voltage x limit (voltage rounded up to 0.1 V, as the engine counts it)
    running: int  # sessions with a non-zero limit in the subtree


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """The result of one tick. Store `last_rotation_at` in the policy state for the next tick."""

    limits: dict[str, SessionLimit]
    zones: dict[str, ZoneUsage]
    rotated: bool
    last_rotation_at: float | None
