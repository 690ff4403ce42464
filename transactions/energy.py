"""Energy and power of a charging session from its meter readings: pure functions, no Django.

Rules (OCPP 1.6 §3.16, §7.31):
1. Energy = meterStop − meterStart when the charger reported both and they increase.
2. Otherwise the latest Energy.Active.Import.Register sample − meterStart (a session closed by
   the system, or a stop whose meter value went backwards after a meter swap).
3. Otherwise, with no meterStart, the last register sample − the first one.
4. Peak power = the highest Power.Active.Import sample (total, or the sum of the phases at the
   same moment), else the highest average between two consecutive register samples.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

ENERGY = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"
_ENERGY_SCALE = {"wh": 1.0, "kwh": 1000.0}
_POWER_SCALE = {"w": 1.0, "kw": 1000.0}


@dataclass(frozen=True)
class Reading:
    timestamp: dt.datetime
    measurand: str
    value: float | None
    unit: str = ""
    phase: str = ""


@dataclass(frozen=True)
class SessionEnergy:
    energy_wh: int | None
    last_register_wh: int | None
    last_reading_at: dt.datetime | None
    peak_power_w: float | None


def register_wh(reading: Reading) -> float | None:
    """The energy register of a reading in Wh (total only), or None when it is something else."""
    if reading.measurand != ENERGY or reading.phase or reading.value is None:
        return None
    scale = _ENERGY_SCALE.get((reading.unit or "Wh").lower())
    return None if scale is None else reading.value * scale


def power_w(reading: Reading) -> float | None:
    if reading.measurand != POWER or reading.value is None:
        return None
    scale = _POWER_SCALE.get((reading.unit or "W").lower())
    return None if scale is None else reading.value * scale


def session_energy(
    *, meter_start_wh: int | None, meter_stop_wh: int | None, readings: Iterable[Reading]
) -> SessionEnergy:
    ordered = sorted(readings, key=lambda r: r.timestamp)
    registers = [(r.timestamp, wh) for r in ordered if (wh := register_wh(r)) is not None]
    last_register = registers[-1][1] if registers else None
    return SessionEnergy(
        energy_wh=_energy(meter_start_wh, meter_stop_wh, registers),
        last_register_wh=None if last_register is None else round(last_register),
        last_reading_at=ordered[-1].timestamp if ordered else None,
        peak_power_w=_peak_power(ordered, registers),
    )


def _energy(start: int | None, stop: int | None, registers: list[tuple[dt.datetime, float]]) -> int | None:
    if start is not None and stop is not None and stop >= start:
        return stop - start
    if start is not None and registers and registers[-1][1] >= start:
        return round(registers[-1][1] - start)
    if start is None and len(registers) >= 2 and registers[-1][1] >= registers[0][1]:
        return round(registers[-1][1] - registers[0][1])
    return None


def _peak_power(ordered: list[Reading], registers: list[tuple[dt.datetime, float]]) -> float | None:
    totals = [w for r in ordered if not r.phase and (w := power_w(r)) is not None]
    if totals:
        return max(totals)
    per_moment: dict[dt.datetime, float] = defaultdict(float)
    for reading in ordered:
        watts = power_w(reading)
        if watts is not None:
            per_moment[reading.timestamp] += watts
    if per_moment:
        return max(per_moment.values())
    averages = [
        (wh2 - wh1) * 3600 / (t2 - t1).total_seconds()
        for (t1, wh1), (t2, wh2) in zip(registers, registers[1:], strict=False)
        if t2 > t1 and wh2 >= wh1
    ]
    return round(max(averages), 1) if averages else None
