"""Operator pages: the site, a charger, its commands. Every view checks the role (dashboard.roles).

Pages are rendered on the server; the live websocket (dashboard.consumers) then replaces the
same template fragments as things change, so there is one way to draw a tile.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from badges.models import Badge, BadgeStatus
from chargers import services as charger_services
from chargers.models import Charger, OcppMessage
from dashboard import commands, roles, selectors, services
from evce import clock
from loadmgmt.models import LimitState, Setpoint, Zone
from transactions import services as transaction_services
from transactions.models import Transaction

logger = logging.getLogger(__name__)

LIMIT_HISTORY_ROWS = 50
ERROR_HISTORY_ROWS = 20


def page_context(request: HttpRequest, nav: str, **extra: Any) -> dict[str, Any]:
    user = request.user
    groups = sorted(user.groups.values_list("name", flat=True)) if user.is_authenticated else []
    role = "superuser" if getattr(user, "is_superuser", False) else ", ".join(groups)
    return {"nav": nav, "role": role, **roles.abilities(user), **extra}


@roles.requires(roles.VIEW)
def overview(request: HttpRequest) -> HttpResponse:
    """The site at a glance: zone tree with bars, one tile per charger; live over the websocket."""
    return render(request, "dashboard/overview.html", page_context(
        request, "site", overview=selectors.overview(now=clock.now()), live_url="/ws/dashboard/site/"))


@roles.requires(roles.VIEW)
def charger(request: HttpRequest, pk: int) -> HttpResponse:
    """One charger: details, live connectors and limits, limit history, configuration, commands."""
    record = get_object_or_404(Charger.objects.select_related("zone"), pk=pk)
    return render(request, "dashboard/charger.html", page_context(
        request, "site", charger=record, **charger_live_context(pk),
        setpoints=Setpoint.objects.filter(charger_id=pk)[:LIMIT_HISTORY_ROWS],
        configuration=record.configuration.all(),
        errors=OcppMessage.objects.filter(charger_id=pk, action="StatusNotification", message_type="CALL")
        .filter(payload__errorCode__isnull=False).exclude(payload__errorCode="NoError")
        .order_by("-timestamp")[:ERROR_HISTORY_ROWS],
        badges=Badge.objects.filter(status=BadgeStatus.ACCEPTED).order_by("id_tag")[:500],
        triggerable=commands.TRIGGERABLE, zones=Zone.objects.order_by("name"), live_url=f"/ws/dashboard/charger/{pk}/",
    ))


def charger_live_context(pk: int) -> dict[str, Any]:
    """What the live part of the charger page shows; the websocket re-renders it with the same data."""
    tiles = selectors.charger_tiles(now=clock.now(), charger_pks=[pk])
    states = LimitState.objects.filter(charger_id=pk).order_by("connector_id")
    status = Charger.objects.filter(pk=pk).values("firmware_status", "diagnostics_status").first()
    return {"tile": tiles[0] if tiles else None, "limit_states": states, "charger_status": status or {}}


def _back_to(pk: int) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("dashboard:charger", args=[pk]) + "#commands")


@require_POST
@roles.requires(roles.OPERATE)
def charger_command(request: HttpRequest, pk: int) -> HttpResponse:
    """Send one command; the answer (or why there is none) is shown on the charger's page."""
    record = get_object_or_404(Charger, pk=pk)
    outcome = commands.run(charge_point_id=record.charge_point_id, name=request.POST.get("command", ""),
                           data=request.POST, user=request.user.get_username())
    (messages.success if outcome.ok else messages.error)(request, outcome.message)
    return _back_to(pk)


@require_POST
@roles.requires(roles.OPERATE)
def charger_read_configuration(request: HttpRequest, pk: int) -> HttpResponse:
    """GetConfiguration: read every key back and store it (operators may read, not change)."""
    record = get_object_or_404(Charger, pk=pk)
    outcome = commands.call(charge_point_id=record.charge_point_id, label="Read configuration",
                            action="GetConfiguration", payload={})
    if outcome.result is None:
        messages.error(request, outcome.message)
        return _back_to(pk)
    result = outcome.result
    keys = result.get("configurationKey") or []
    charger_services.configuration_outcomes_record(outcomes=[charger_services.ConfigurationOutcome(
        pk, changes=(), read=charger_services.configuration_read_back(keys))])
    unknown = result.get("unknownKey") or []
    messages.success(request, f"Read configuration: {len(keys)} keys" + (f", unknown: {unknown}" if unknown else ""))
    return _back_to(pk)


@require_POST
@roles.requires(roles.CONFIGURE)
def charger_change_configuration(request: HttpRequest, pk: int) -> HttpResponse:
    """ChangeConfiguration of one key (admins only); the outcome is stored on the key."""
    record = get_object_or_404(Charger, pk=pk)
    key = request.POST.get("key", "").strip()
    value = request.POST.get("value", "")
    if not key or len(key) > 50 or len(value) > 500:
        messages.error(request, "Change configuration: give a key (≤ 50 characters) and a value (≤ 500).")
        return _back_to(pk)
    outcome = commands.call(charge_point_id=record.charge_point_id, label=f"Change {key}",
                            action="ChangeConfiguration", payload={"key": key, "value": value})
    if outcome.status:
        charger_services.configuration_outcomes_record(outcomes=[charger_services.ConfigurationOutcome(
            pk, changes=((key, value, outcome.status),), read=None)])
    logger.info("dashboard: %s changed %s=%r on %s: %s", request.user.get_username(), key, value,
                record.charge_point_id, outcome.message)
    (messages.success if outcome.ok else messages.error)(request, outcome.message)
    return _back_to(pk)


@require_POST
@roles.requires(roles.CONFIGURE)
def charger_accept(request: HttpRequest, pk: int) -> HttpResponse:
    """Accept a discovered (pending or rejected) charger into a zone: admins only."""
    record = get_object_or_404(Charger, pk=pk)
    zone_pk = request.POST.get("zone", "")
    zone = Zone.objects.filter(pk=int(zone_pk)).first() if zone_pk.isdigit() else None
    if zone_pk and zone is None:
        messages.error(request, "Accept: that zone does not exist any more.")
        return _back_to(pk)
    configured = services.charger_accept_into_zone(charger_pk=pk, zone=zone)
    where = f"into zone {zone.name}" if zone else "without a zone"
    follow = ("its configuration is being applied" if configured
              else "it is configured when it next boots (pending chargers retry their boot)")
    messages.success(request, f"{record.charge_point_id} accepted {where}; {follow}.")
    logger.info("dashboard: %s accepted %s %s", request.user.get_username(), record.charge_point_id, where)
    return HttpResponseRedirect(reverse("dashboard:charger", args=[pk]))


@require_POST
@roles.requires(roles.OPERATE)
def session_vip(request: HttpRequest, pk: int) -> HttpResponse:
    """Serve a running session first (priority mode) or not: operators and admins; back where it was asked."""
    record = get_object_or_404(Transaction.objects.select_related("charger"), pk=pk)
    vip = request.POST.get("vip") == "1"
    who = record.charger.charge_point_id + f" #{record.connector_id}"
    if transaction_services.transaction_set_vip(transaction=record, vip=vip, by=request.user.get_username()):
        messages.success(request, f"Session {pk} on {who} is {'now VIP: served first' if vip else 'no longer VIP'}.")
    else:
        messages.error(request, f"Session {pk} on {who} is not running any more: VIP not changed.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = reverse("dashboard:overview")
    return HttpResponseRedirect(back)
