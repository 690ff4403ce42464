"""Writes of the load-management app: measurements, decisions, what was sent."""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from loadmgmt.models import AppliedLimit, Setpoint, SiteSettings, Zone


def zone_record_measurement(
    *,
    zone: Zone,
    at: dt.datetime,
    current_a: tuple[float | None, float | None, float | None] | None = None,
    power_kw: float | None = None,
    pv_power_kw: float | None = None,
) -> None:
    """Store the latest measurement of a zone's total consumption and/or PV production.

    Consumption and PV keep separate timestamps, so that one source being alive never makes
    the other look fresh; an older reading never overwrites a newer one (pushes and polls may
    cross).
    """
    if current_a is not None or power_kw is not None:
        fields: dict[str, object] = {"measured_at": at}
        if current_a is not None:
            fields.update(measured_current_l1_a=current_a[0], measured_current_l2_a=current_a[1],
                          measured_current_l3_a=current_a[2])
        if power_kw is not None:
            fields["measured_power_kw"] = power_kw
        Zone.objects.filter(pk=zone.pk).exclude(measured_at__gt=at).update(**fields)
    if pv_power_kw is not None:
        Zone.objects.filter(pk=zone.pk).exclude(pv_measured_at__gt=at).update(
            pv_power_kw=pv_power_kw, pv_measured_at=at
        )


def applied_limit_record(
    *,
    charger_pk: int,
    connector_id: int,
    purpose: str,
    transaction_id: int | None,
    limit_a: float,
    paused: bool,
    state_since: float,
    status: str,
    now: dt.datetime,
) -> None:
    with transaction.atomic():
        AppliedLimit.objects.update_or_create(
            charger_id=charger_pk,
            connector_id=connector_id,
            defaults={"purpose": purpose, "transaction_id": transaction_id, "limit_a": limit_a, "paused": paused,
                      "state_since": state_since, "status": status[:40], "sent_at": now},
        )


def setpoints_record(rows: list[Setpoint]) -> None:
    Setpoint.objects.bulk_create(rows)


def setpoints_prune(*, now: dt.datetime) -> int:
    days = SiteSettings.load().setpoint_retention_days
    deleted, _ = Setpoint.objects.filter(timestamp__lt=now - dt.timedelta(days=days)).delete()
    return deleted


def site_record_rotation(*, last_rotation_at: float | None) -> None:
    SiteSettings.objects.filter(pk=1).update(last_rotation_at=last_rotation_at)
