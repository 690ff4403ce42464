"""Safe default limits: each connector's fair share of every zone above it, from static data only.

Static data only (breaker ratings, kW limits, the lowest time-of-use limit, dynamic zones'
fallback) because this is the limit a charger keeps when the controller is gone and no
measurement can be trusted. Shared by the allocation engine itself, so every A limit per phase
and every kW limit at every level is honoured, per connector: a TxDefaultProfile on connector 0
applies to each connector, so a dual-socket charger counts twice. Pure: no Django.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loadmgmt.engine import Policy, Session, Zone, allocate
from loadmgmt.engine.network import floor_units

# Fair share is computed with a tiny minimum so that everybody gets a share; a share below the
# charger's minimum becomes 0 afterwards (the car waits for the loop rather than risk a breaker).
_SHARE_FLOOR_A = 0.1
_EQUAL = Policy(mode="equal", min_on_s=0.0, min_off_s=0.0, unused_margin_a=0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class DefaultCharger:
    pk: int
    zone_id: str  # engine zone id (see loadmgmt.tree.charger_zone_id)
    phases: tuple[int, ...]
    connectors: int
    max_a: float
    min_a: float


# The last inputs and their targets. The loop asks every tick, and the static data rarely
# changes between ticks: on 5,000 chargers the allocation behind the answer was ~30 ms of a
# ~500 ms tick. The inputs are frozen dataclasses compared field by field, in order, so any
# change (a zone's rating, a charger added, moved or rewired) computes afresh.
_last: tuple[tuple[tuple[Zone, ...], tuple[DefaultCharger, ...]], dict[int, float]] | None = None


def safe_default_targets(static_zones: Sequence[Zone], chargers: Sequence[DefaultCharger]) -> dict[int, float]:
    """Safe default current (A per phase) per charger pk."""
    global _last
    key = (tuple(static_zones), tuple(chargers))
    last = _last
    if last is not None and last[0] == key:
        return dict(last[1])
    targets = _targets(static_zones, chargers)
    _last = (key, dict(targets))
    return targets


def _targets(static_zones: Sequence[Zone], chargers: Sequence[DefaultCharger]) -> dict[int, float]:
    sessions = [
        Session(id=f"{charger.pk}/{n}", zone_id=charger.zone_id, max_a=charger.max_a, phases=charger.phases,
                min_a=_SHARE_FLOOR_A)
        for charger in chargers for n in range(max(1, charger.connectors))
    ]
    limits = allocate(static_zones, sessions, _EQUAL, now=0.0).limits
    targets: dict[int, float] = {}
    for charger in chargers:
        share = min(limits[f"{charger.pk}/{n}"].limit_a for n in range(max(1, charger.connectors)))
        share = floor_units(share, 10) / 10
        targets[charger.pk] = share if share >= charger.min_a else 0.0
    return targets
