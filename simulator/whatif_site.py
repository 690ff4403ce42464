"""The site configuration in the database, as :mod:`simulator.whatif` replays it.

The one simulator module that imports Django models (used only by ``simulate_fleet --what-if``):
zones through the control loop's own conversion (:func:`loadmgmt.inputs.zone_config`, with
time-of-use rules and fallbacks), accepted chargers placed in the tree as the loop places them
(:func:`loadmgmt.tree.charger_zone_id`), the sharing policy from the site settings.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from django.utils import timezone

from chargers.models import Charger, RegistrationStatus
from loadmgmt import tree
from loadmgmt.capacity import ZoneConfig
from loadmgmt.engine import Policy
from loadmgmt.inputs import site_policy, zone_config
from loadmgmt.models import SiteSettings, Zone
from simulator.whatif import WhatIfCharger


@dataclass
class WhatIfSite:
    zones: list[ZoneConfig]
    chargers: list[WhatIfCharger]
    policy: Policy
    car_response_s: float
    fallback_a: float

    def day_start(self, day: dt.date | None = None) -> dt.datetime:
        """Midnight of ``day`` (default today) in the site's time zone (time-of-use rules are local)."""
        day = day or timezone.localdate()
        return timezone.make_aware(dt.datetime.combine(day, dt.time()), timezone.get_current_timezone())

    def building_at_roots(self, building_a: tuple[float, float, float]) -> dict[str, tuple[float, float, float]]:
        """The building's own load, placed at the connection point(s)."""
        return {} if not any(building_a) else {root: building_a for root in tree.root_ids(self.zones)}


def site_from_database() -> WhatIfSite:
    settings = SiteSettings.load()
    configs = [zone_config(zone, settings) for zone in Zone.objects.prefetch_related("time_of_use")]
    roots = tree.root_ids(configs)
    chargers = [
        WhatIfCharger(cp_id=row.charge_point_id, zone_id=tree.charger_zone_id(row.zone_id, roots),
                      rated_a=row.rated_max_current_a, supply_phases=row.supply_phases, min_a=row.min_current_a,
                      vip=row.vip)
        for row in Charger.objects.filter(registration_status=RegistrationStatus.ACCEPTED).order_by("charge_point_id")
    ]
    policy = replace(site_policy(settings), last_rotation_at=None)  # the replayed day starts afresh
    return WhatIfSite(configs, chargers, policy, settings.car_response_s, settings.fallback_current_a)
