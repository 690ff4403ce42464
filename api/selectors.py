"""Reads of the BEMS API (REST and Modbus share them): zone status, headroom, site figures."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count
from django.utils import timezone

from api import watchdog
from api.models import ZoneControl
from loadmgmt.capacity import lower_limit, time_of_use_limits
from loadmgmt.inputs import zone_config
from loadmgmt.models import SiteSettings, Zone
from meters.selectors import ev_submeter_currents
from transactions.models import Transaction, TransactionState

Phases = tuple[float | None, float | None, float | None]


@dataclass(frozen=True)
class ZoneStatus:
    """A zone as a building system sees it: limits, what governs them, load, headroom."""

    zone: Zone
    control: watchdog.ControlStatus
    fallback_a: float
    limit_current_a: float | None  # configured limit, lowered by time of use and a budget in force
    limit_power_kw: float | None
    time_of_use: str  # label of the active time-of-use rule, "" when none
    measured_current_a: Phases
    measured_power_kw: float | None
    measured_at: dt.datetime | None
    pv_power_kw: float | None
    ev_current_a: tuple[float, float, float] | None
    headroom_a: float | None
    headroom_kw: float | None




def zone_statuses(now: dt.datetime, zone_ids: list[int] | None = None) -> list[ZoneStatus]:
    """Every zone (or these), with the BEMS control status and a simple headroom.

    Headroom = the effective limit minus the zone's latest measured total on its worst phase
    (and in kW): what more the zone could draw right now. None when not measured or not limited.
    """
    zones = Zone.objects.all() if zone_ids is None else Zone.objects.filter(pk__in=zone_ids)
    zone_list = list(zones.order_by("pk").prefetch_related("time_of_use"))
    controls = {c.zone_id: c for c in ZoneControl.objects.filter(zone__in=zone_list).select_related("integration")}
    site = SiteSettings.load()
    ev = ev_submeter_currents([z.pk for z in zone_list], now=now, max_age_s=site.measurement_max_age_s)
    result = []
    for zone in zone_list:
        fallback = zone.effective_fallback_a(site)
        control = watchdog.zone_control_status(
            controls.get(zone.pk), zone_max_current_a=zone.max_current_a, zone_max_power_kw=zone.max_power_kw,
            zone_fallback_a=fallback, now=now,
        )
        tou_a, tou_w, tou_label = time_of_use_limits(zone_config(zone, site), timezone.localtime(now))
        limit_a = lower_limit(tou_a, control.current_a)
        limit_kw = lower_limit(None if tou_w is None else tou_w / 1000, control.power_kw)
        phases = (zone.measured_current_l1_a, zone.measured_current_l2_a, zone.measured_current_l3_a)
        measured = [p for p in phases if p is not None]
        headroom_a = None if limit_a is None or not measured else round(limit_a - max(measured), 3)
        headroom_kw = (None if limit_kw is None or zone.measured_power_kw is None
                       else round(limit_kw - zone.measured_power_kw, 3))
        result.append(ZoneStatus(
            zone=zone, control=control, fallback_a=fallback, limit_current_a=limit_a, limit_power_kw=limit_kw,
            time_of_use=tou_label,
            measured_current_a=phases, measured_power_kw=zone.measured_power_kw, measured_at=zone.measured_at,
            pv_power_kw=zone.pv_power_kw, ev_current_a=ev.get(zone.pk), headroom_a=headroom_a,
            headroom_kw=headroom_kw,
        ))
    return result


def active_session_count(zone_pk: int | None = None) -> int:
    sessions = Transaction.objects.filter(state=TransactionState.ACTIVE)
    if zone_pk is not None:
        sessions = sessions.filter(charger__zone_id=zone_pk)
    return sessions.count()


def active_sessions_per_zone() -> dict[int | None, int]:
    """Running sessions per charger zone (None: chargers without a zone), one query."""
    rows = (Transaction.objects.filter(state=TransactionState.ACTIVE).order_by()
            .values_list("charger__zone_id").annotate(count=Count("pk")))
    return dict(rows)
