"""Pure load-allocation engine of the site controller: capacities and sessions in, limits out.

No Django, no I/O, no clock: the caller passes `now` and everything else, so the same input
always gives the same output and every rule can be tested with a hand-made clock.

    from loadmgmt.engine import Policy, Session, Zone, allocate
    result = allocate(zones, sessions, Policy(mode="equal"), now=time_s)
    result.limits["tx-42"].limit_a, result.limits["tx-42"].binding  # 15.7, "zone:Level-2 phase L1"
"""

from .admission import rotation_due
from .audit import check_allocation
from .core import allocate, session_ceiling
from .model import (
    CHARGER_MAX,
    MEASURED_DRAW,
    MIN_OFF_HOLD,
    SESSION_MAX,
    SHED,
    THREE_PHASE,
    UNKNOWN_ZONE,
    Allocation,
    Policy,
    Session,
    SessionLimit,
    Zone,
    ZoneUsage,
)

__all__ = [
    "CHARGER_MAX",
    "MEASURED_DRAW",
    "MIN_OFF_HOLD",
    "SESSION_MAX",
    "SHED",
    "THREE_PHASE",
    "UNKNOWN_ZONE",
    "Allocation",
    "Policy",
    "Session",
    "SessionLimit",
    "Zone",
    "ZoneUsage",
    "allocate",
    "check_allocation",
    "rotation_due",
    "session_ceiling",
]
