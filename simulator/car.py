"""A simulated car on one connector: it follows the charger's offered current (IEC 61851-1).

The charger signals the allowed current by PWM; the car follows a change within a few
seconds (``response_delay_s``), never draws more than its on-board charger allows, cannot
be signalled below 6 A (then it pauses), and stops drawing when its battery is full.
Pure: time is passed in (seconds, any monotonic origin), nothing sleeps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from simulator.composite import VOLTAGE_V

MIN_SIGNAL_A = 6.0  # IEC 61851-1: lowest current a PWM duty cycle can signal


@dataclass(frozen=True)
class CarSpec:
    """What a car can take: amps per phase, on how many phases, how much energy it wants."""

    max_current_a: float = 32.0
    phases: int = 3
    demand_wh: float = 30_000.0
    response_delay_s: float = 1.0


class Car:
    """One car plugged into one connector; :meth:`update` advances it to a given time."""

    def __init__(self, spec: CarSpec | None = None, *, now_s: float = 0.0) -> None:
        """Plugged in at ``now_s`` with nothing offered yet."""
        self.spec = spec or CarSpec()
        self.energy_wh = 0.0
        self.current_a = 0.0
        self._last_s = now_s
        # Step function of what the charger offered: (since, amps), oldest first.
        self._offers: deque[tuple[float, float]] = deque([(now_s, 0.0)])

    @property
    def full(self) -> bool:
        """The battery took all it wanted."""
        return self.energy_wh >= self.spec.demand_wh

    @property
    def power_w(self) -> float:
        """Power drawn now (nominal voltage)."""
        return self.current_a * VOLTAGE_V * self.spec.phases

    def offer(self, now_s: float, offered_a: float | None) -> None:
        """The charger's PWM now says ``offered_a`` per phase (None: no limit but the cable's)."""
        value = self.spec.max_current_a if offered_a is None else offered_a
        if self._offers[-1][1] != value:
            self._offers.append((now_s, value))

    def followed_offer_a(self, now_s: float) -> float:
        """The offer the car acts on at ``now_s``: the one from ``response_delay_s`` ago."""
        horizon = now_s - self.spec.response_delay_s
        while len(self._offers) > 1 and self._offers[1][0] <= horizon:
            self._offers.popleft()
        return self._offers[0][1] if self._offers[0][0] <= horizon else 0.0

    def update(self, now_s: float) -> float:
        """Integrate energy up to ``now_s`` at the previous draw, then set the new draw (A/phase)."""
        elapsed = max(0.0, now_s - self._last_s)
        self.energy_wh += self.power_w * elapsed / 3600.0
        self._last_s = now_s
        offered = self.followed_offer_a(now_s)
        if self.full or offered < MIN_SIGNAL_A:
            self.current_a = 0.0
        else:
            self.current_a = min(self.spec.max_current_a, offered)
        return self.current_a
