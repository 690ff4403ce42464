"""Commissioning checklist: what is configured, what is missing, and where to do it.

A read of the live configuration every time, so it is resumable and re-runnable by nature: a
step is done when the database says so, whoever did it (this page's links, the admin, a restore).
The writes stay where they are validated: the admin (zones, meters with their connection test,
badges import), the charger page (accepting a discovered charger into a zone).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse

from badges.models import Badge
from chargers.models import Charger, RegistrationStatus
from dashboard import roles
from dashboard.views import page_context
from evce import clock
from loadmgmt.models import SiteSettings, Zone, ZoneMode
from meters.models import Meter, MeterRole


@dataclass
class Step:
    title: str
    done: bool
    summary: str
    problems: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, url)


def _admin(name: str, *args: object) -> str:
    try:
        return reverse(f"admin:{name}", args=args)
    except NoReverseMatch:
        return ""


def _links(*pairs: tuple[str, str]) -> list[tuple[str, str]]:
    return [(label, url) for label, url in pairs if url]


def steps(now: dt.datetime) -> list[Step]:
    return [_site(), _zones(), _meters(now), _chargers(), _badges()]


def _site() -> Step:
    site = SiteSettings.load()
    return Step("Site policy", True,
                f"{site.get_allocation_mode_display()}; {site.get_shedding_policy_display().lower()}; loop every "
                f"{site.loop_period_s} s; fallback {site.fallback_current_a:g} A",
                links=_links(("Site settings", _admin("loadmgmt_sitesettings_changelist"))))


def _zones() -> Step:
    zones = list(Zone.objects.select_related("parent"))
    roots = [zone for zone in zones if zone.parent_id is None]
    problems = []
    if len(roots) > 1:
        problems.append(f"{len(roots)} root zones: chargers without a zone get no current until you pick one")
    for zone in zones:
        parent = zone.parent
        if parent and zone.max_current_a and parent.max_current_a and zone.max_current_a > parent.max_current_a:
            problems.append(f"{zone.name} ({zone.max_current_a:g} A) is larger than its parent {parent.name} "
                            f"({parent.max_current_a:g} A): the parent's limit is what counts")
    summary = (f"{len(zones)} zone{'s' if len(zones) != 1 else ''}, connection point "
               f"{roots[0].name if roots else '—'}") if zones else "No zone: chargers share the site fallback current"
    return Step("Connection point and zones", bool(roots), summary, problems,
                _links(("Zones", _admin("loadmgmt_zone_changelist")), ("Add a zone", _admin("loadmgmt_zone_add"))))


def _meters(now: dt.datetime) -> Step:
    site = SiteSettings.load()
    meters = list(Meter.objects.filter(enabled=True))
    problems = [f"{meter.name}: {'no reading yet' if meter.last_reading_at is None else 'stale'}"
                + (f" ({meter.last_error[:100]})" if meter.last_error else "")
                for meter in meters if meter.is_stale(now, site.measurement_max_age_s)]
    fed = {meter.zone_id for meter in meters if meter.role == MeterRole.ZONE_TOTAL}
    for zone in Zone.objects.filter(mode=ZoneMode.DYNAMIC):
        if zone.pk not in fed and zone.measured_at is None:
            problems.append(f"dynamic zone {zone.name} has no consumption meter nor BEMS push: it runs on its "
                            "fallback current")
    return Step("Meters", not problems, f"{len(meters)} meter{'s' if len(meters) != 1 else ''} polled", problems,
                _links(("Meters (select them, then Test connection)", _admin("meters_meter_changelist"))))


def _chargers() -> Step:
    chargers = list(Charger.objects.select_related("zone"))
    pending = [c for c in chargers if c.registration_status != RegistrationStatus.ACCEPTED]
    several_roots = Zone.objects.filter(parent__isnull=True).count() > 1
    problems = [f"{c.charge_point_id} is {c.registration_status}: accept it into a zone" for c in pending]
    if several_roots:
        problems += [f"{c.charge_point_id} has no zone" for c in chargers if c.zone_id is None and c not in pending]
    links = [(f"Accept {c.charge_point_id}", reverse("dashboard:charger", args=[c.pk])) for c in pending[:20]]
    accepted = len(chargers) - len(pending)
    return Step("Chargers", bool(chargers) and not problems,
                f"{accepted} accepted, {len(pending)} waiting, {sum(c.connected for c in chargers)} online", problems,
                _links(*links, ("Chargers", _admin("chargers_charger_changelist"))))


def _badges() -> Step:
    count = Badge.objects.count()
    return Step("Badges", count > 0, f"{count} badge{'s' if count != 1 else ''}", [],
                _links(("Import badges (CSV)", _admin("badges_badge_import")),
                       ("Badges", _admin("badges_badge_changelist"))))


@roles.requires(roles.CONFIGURE)
def commissioning(request: HttpRequest) -> HttpResponse:
    checklist = steps(clock.now())
    return render(request, "dashboard/commissioning.html", page_context(
        request, "health", steps=checklist, all_done=all(step.done for step in checklist)))
