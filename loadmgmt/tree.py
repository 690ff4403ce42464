"""The zone tree in one place: which zone feeds a charger, subtree sums, static capacities.

A charger without a zone is fed by the site's connection point: the root zone when there is
exactly one. With no zones at all, chargers share a virtual site zone limited to the site
fallback current (never "unlimited"). With several roots nobody can tell which one feeds it, so
it gets no current at all until the installer picks a zone (the admin says so).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from loadmgmt.capacity import PHASES, ZoneConfig, lower_limit
from loadmgmt.engine import Zone as EngineZone

SITE_ZONE_ID = "site"  # the virtual zone of a site without zones
NO_ZONE = "no zone"  # engine zone id of a charger nobody can place: unknown to the engine, never allocated

Phases3 = tuple[float, float, float]


def root_ids(configs: Iterable[ZoneConfig]) -> list[str]:
    return [config.id for config in configs if config.parent_id is None]


def charger_zone_id(zone_pk: int | None, roots: list[str]) -> str:
    """Engine zone id of a charger: its own zone, the only root, the virtual site zone, or none."""
    if zone_pk is not None:
        return str(zone_pk)
    if not roots:
        return SITE_ZONE_ID
    return roots[0] if len(roots) == 1 else NO_ZONE


def site_zone(fallback_current_a: float) -> EngineZone:
    return EngineZone(id=SITE_ZONE_ID, name="site (no zones configured: site fallback current)",
                      capacity_a=(fallback_current_a, fallback_current_a, fallback_current_a))


def subtree_sums(
    parents: Mapping[str, str | None], per_zone: Mapping[str, Phases3], replaced: Mapping[str, Phases3] | None = None
) -> dict[str, Phases3]:
    """Per-phase sums of `per_zone` over each zone's subtree.

    `replaced` gives, for some zones, a value that stands for their whole subtree (an EV
    sub-meter on a feeder measures every charger below it): below such a zone nothing is added
    again, so no load is ever counted twice.
    """
    children: dict[str | None, list[str]] = defaultdict(list)
    for zone_id, parent in parents.items():
        children[parent].append(zone_id)
    replaced = replaced or {}
    sums: dict[str, Phases3] = {}

    def total(zone_id: str) -> Phases3:
        acc = list(per_zone.get(zone_id, (0.0, 0.0, 0.0)))
        for child in children.get(zone_id, []):
            child_sum = total(child)
            acc = [acc[p] + child_sum[p] for p in range(PHASES)]
        own: Phases3 = replaced.get(zone_id, (acc[0], acc[1], acc[2]))
        sums[zone_id] = own
        return own

    for root in children.get(None, []):
        total(root)
    return sums


def static_capacity(config: ZoneConfig) -> EngineZone:
    """What a zone can give when nothing is measured and no controller is there to follow the clock.

    The lowest of the breaker rating, every time-of-use limit (the controller may be gone when a
    peak period starts) and, for a dynamic zone, its fallback current. This is what safe
    defaults are shared from.
    """
    current, power = config.max_current_a, config.max_power_w
    for rule in config.time_of_use:
        if rule.limit_percent is not None:
            factor = rule.limit_percent / 100.0
            current = lower_limit(current, None if config.max_current_a is None else config.max_current_a * factor)
            power = lower_limit(power, None if config.max_power_w is None else config.max_power_w * factor)
        else:
            current = lower_limit(current, rule.limit_current_a)
    if config.dynamic:
        current = lower_limit(current, config.fallback_current_a if config.fallback_current_a is not None else 0.0)
    amps = None if current is None else (max(0.0, current),) * PHASES
    return EngineZone(id=config.id, parent_id=config.parent_id, name=config.name,
                      capacity_a=None if amps is None else (amps[0], amps[1], amps[2]),
                      capacity_w=None if power is None else max(0.0, power))

