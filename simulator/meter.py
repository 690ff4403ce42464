"""The building's meter: a real pymodbus TCP server impersonating a Schneider iEM3x5x.

It reports, per phase, the building's own load (a settable or stepped profile) plus what the
simulated cars draw on their supply phases, exactly as the zone's total-consumption meter
would. The controller reads it over Modbus like the real thing (register map
:data:`meters.registers.IEM3X5X`), with two realistic flaws on demand:

- ``lag_s`` (0-2 s): the registers show the value of ``lag_s`` ago (meter integration time,
  gateway polling), so the controller always acts on the past;
- ``dead``: ``"silent"`` (requests are never answered) or ``"exception"`` (every read gets
  Modbus exception 4, server device failure).

The invariant checker reads :meth:`SimMeter.true_building_a` instead: the truth, not lagged.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Sequence
from typing import Literal

from meters.registers import IEM3X5X, RegisterMap
from simulator.composite import VOLTAGE_V
from simulator.modbus_device import FakeMeter, FakeMeterServer

Phases = tuple[float, float, float]
DeadMode = Literal["silent", "exception"] | None
SERVER_DEVICE_FAILURE = 4


class BuildingLoad:
    """The building's own current per phase over time: a level, plus optional future steps."""

    def __init__(self, base_a: Phases = (0.0, 0.0, 0.0)) -> None:
        """Constant ``base_a`` until :meth:`set` or :meth:`step_at` say otherwise."""
        self._times: list[float] = [float("-inf")]
        self._values: list[Phases] = [base_a]

    def set(self, now_s: float, value_a: Phases) -> None:
        """From ``now_s`` on, the building draws ``value_a`` (later steps are kept)."""
        self.step_at(now_s, value_a)

    def step_at(self, at_s: float, value_a: Phases) -> None:
        """Schedule a step (e.g. a chiller starting) at ``at_s``."""
        index = bisect.bisect_right(self._times, at_s)
        if index and self._times[index - 1] == at_s:
            self._values[index - 1] = value_a
            return
        self._times.insert(index, at_s)
        self._values.insert(index, value_a)

    def at(self, t_s: float) -> Phases:
        """Building current per phase at ``t_s``."""
        return self._values[bisect.bisect_right(self._times, t_s) - 1]


class SimMeter:
    """One zone's total-consumption meter (one Modbus unit id) fed by the simulation."""

    def __init__(
        self,
        zone_id: str,
        ev_currents: Callable[[], Phases],
        *,
        building: BuildingLoad | None = None,
        unit_id: int = 1,
        lag_s: float = 0.0,
        register_map: RegisterMap = IEM3X5X,
    ) -> None:
        """``ev_currents`` returns what the cars inside the zone draw now, per supply phase."""
        self.zone_id = zone_id
        self.ev_currents = ev_currents
        self.building = building or BuildingLoad()
        self.lag_s = lag_s
        self.device = FakeMeter(register_map, unit_id=unit_id)
        self.energy_wh = 0.0
        self._history: deque[tuple[float, Phases]] = deque()
        self._last_s: float | None = None

    @property
    def unit_id(self) -> int:
        """Modbus unit id (several meters can share one server, as behind a gateway)."""
        return self.device.unit_id

    def true_building_a(self, t_s: float) -> Phases:
        """The building's own load at ``t_s`` (what a dynamic zone must leave to it)."""
        return self.building.at(t_s)

    def true_total_a(self, t_s: float) -> Phases:
        """Building plus cars, now: what an ideal meter would show."""
        building, ev = self.building.at(t_s), self.ev_currents()
        return building[0] + ev[0], building[1] + ev[1], building[2] + ev[2]

    def set_dead(self, mode: DeadMode) -> None:
        """``"silent"``, ``"exception"`` or None (alive again)."""
        self.device.exception_code = SERVER_DEVICE_FAILURE if mode == "exception" else None
        if mode == "silent":
            self.device.silent = True
        elif self.device.silent:
            self.device.revive()

    def update(self, now_s: float) -> None:
        """Sample the truth now and publish the value of ``lag_s`` ago in the registers."""
        total = self.true_total_a(now_s)
        if self._last_s is not None:
            self.energy_wh += sum(total) * VOLTAGE_V * max(0.0, now_s - self._last_s) / 3600.0
        self._last_s = now_s
        self._history.append((now_s, total))
        horizon = now_s - self.lag_s
        while len(self._history) > 1 and self._history[1][0] <= horizon:
            self._history.popleft()
        shown = self._history[0][1]
        values = {
            "current_l1_a": shown[0], "current_l2_a": shown[1], "current_l3_a": shown[2],
            "voltage_l1_v": VOLTAGE_V, "voltage_l2_v": VOLTAGE_V, "voltage_l3_v": VOLTAGE_V,
            "power_l1_w": shown[0] * VOLTAGE_V, "power_l2_w": shown[1] * VOLTAGE_V, "power_l3_w": shown[2] * VOLTAGE_V,
            "power_w": sum(shown) * VOLTAGE_V, "frequency_hz": 50.0, "energy_import_wh": self.energy_wh,
        }
        self.device.set_values({q: v for q, v in values.items() if q in self.device.register_map.quantities})


class MeterServer:
    """The Modbus TCP server hosting the simulated meters (one port, one unit id each)."""

    def __init__(self, meters: Sequence[SimMeter], *, host: str = "127.0.0.1", port: int = 0) -> None:
        """``port`` 0 lets the OS choose; read :attr:`port` after :meth:`start`."""
        self.meters = list(meters)
        self._server = FakeMeterServer([m.device for m in self.meters], host=host, port=port)

    @property
    def port(self) -> int:
        """The listening port."""
        return self._server.port

    @property
    def host(self) -> str:
        """The listening address."""
        return self._server.host

    async def start(self) -> MeterServer:
        """Listen and serve in the background of the current loop."""
        await self._server.start()
        return self

    async def stop(self) -> None:
        """Close the listener and every connection."""
        await self._server.stop()

