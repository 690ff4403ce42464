"""Safe default limits: each charger's fair share of every zone above it, from static data only.

Static data only (breaker ratings, dynamic zones' fallback limits) because this is the limit a
charger keeps when the controller is gone, when no measurement can be trusted.
"""

from __future__ import annotations

from collections import defaultdict

from chargers.models import Charger
from loadmgmt.capacity import safe_default_current
from loadmgmt.models import SiteSettings, Zone, ZoneMode


def static_zone_limit_a(zone: Zone, site: SiteSettings) -> float | None:
    if zone.mode == ZoneMode.DYNAMIC:
        fallback = zone.effective_fallback_a(site)
        return fallback if zone.max_current_a is None else min(fallback, zone.max_current_a)
    if zone.max_current_a is not None:
        return zone.max_current_a
    if zone.max_power_kw is not None:
        return zone.max_power_kw * 1000 / (3 * 230.0)
    return None


def safe_defaults(zones: list[Zone], chargers: list[Charger], site: SiteSettings) -> dict[int, float]:
    """Safe default current per charger pk, counting every managed charger of the site."""
    by_pk = {zone.pk: zone for zone in zones}
    counts: dict[int, int] = defaultdict(int)
    for zone_id in Charger.objects.filter(zone__isnull=False).values_list("zone_id", flat=True):
        for ancestor in _path(by_pk, zone_id):
            counts[ancestor.pk] += 1
    result = {}
    for charger in chargers:
        path = [(static_zone_limit_a(z, site), counts[z.pk]) for z in _path(by_pk, charger.zone_id)]
        result[charger.pk] = safe_default_current(
            path, charger_max_a=charger.rated_max_current_a, min_a=charger.min_current_a
        )
    return result


def _path(by_pk: dict[int, Zone], zone_id: int | None) -> list[Zone]:
    path, seen = [], set()
    while zone_id is not None and zone_id in by_pk and zone_id not in seen:
        seen.add(zone_id)
        path.append(by_pk[zone_id])
        zone_id = by_pk[zone_id].parent_id
    return path
