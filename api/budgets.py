"""The control loop's view of BEMS budgets: which zones have one in force, and how much.

The loop calls ``active_zone_budgets`` at every tick and takes, per zone, the lower of its
configured limits and the budget. Two queries (the zones' controls with their integrations and
zones; the site fallback), and the time rules of ``api.watchdog``: an expired setpoint is simply
absent, a lost heartbeat turns into a failsafe budget without anything having to run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from api import watchdog
from api.models import ZoneControl
from loadmgmt.models import SiteSettings


@dataclass(frozen=True)
class ZoneBudget:
    """A zone's BEMS budget in force: A per phase and/or kW (None: not limited by the BEMS)."""

    current_a: float | None
    power_kw: float | None
    source: str  # "setpoint" or "failsafe"
    since: dt.datetime | None
    note: str


def active_zone_budgets(zone_ids: list[int], now: dt.datetime) -> dict[int, ZoneBudget]:
    """Budgets in force at ``now`` for these zones; zones without one are not in the result."""
    controls = list(ZoneControl.objects.filter(zone_id__in=zone_ids).select_related("integration", "zone"))
    if not controls:
        return {}
    site_fallback_a = SiteSettings.load().fallback_current_a
    budgets: dict[int, ZoneBudget] = {}
    for control in controls:
        zone = control.zone
        fallback = site_fallback_a if zone.fallback_current_a is None else zone.fallback_current_a
        status = watchdog.zone_control_status(
            control, zone_max_current_a=zone.max_current_a, zone_max_power_kw=zone.max_power_kw,
            zone_fallback_a=fallback, now=now,
        )
        if status.source in (watchdog.SETPOINT, watchdog.FAILSAFE):
            budgets[zone.pk] = ZoneBudget(status.current_a, status.power_kw, status.source, status.since, status.note)
    return budgets
