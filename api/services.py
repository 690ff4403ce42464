"""Writes of the BEMS integration: heartbeats, zone setpoints, releases.

Each write first records the heartbeat (a setpoint write is a sign of life too), so that a
loss that ended with this call is marked on the integration's zones before anything else
changes: the failsafe it started is then left only by the rules of ``api.watchdog``.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from api import watchdog
from api.models import Integration, SetpointRecord, ZoneControl
from loadmgmt.models import Zone


class SetpointConflict(Exception):
    """The zone is budgeted by another integration, or in failsafe: the write would override it."""


def integration_heartbeat(*, integration: Integration, now: dt.datetime) -> None:
    """Record a sign of life; a loss it ends is marked on every zone the integration budgets."""
    with transaction.atomic():
        locked = Integration.objects.select_for_update().get(pk=integration.pk)
        controls = list(ZoneControl.objects.filter(integration=locked))
        for pk, since in watchdog.failsafe_marks_on_heartbeat(controls, locked, now).items():
            ZoneControl.objects.filter(pk=pk).update(failsafe_since=since)
        Integration.objects.filter(pk=locked.pk).update(last_heartbeat_at=now, last_used_at=now)
    integration.last_heartbeat_at = now


def zone_setpoint_write(
    *, integration: Integration, zone: Zone, current_a: float | None, power_kw: float | None,
    valid_until: dt.datetime | None, now: dt.datetime,
) -> ZoneControl:
    """Write the zone's budget (validated by the caller: expiry rules, positive values).

    Refused (SetpointConflict) when another integration budgets the zone: two building systems
    writing the same zone would silently override each other.
    """
    integration_heartbeat(integration=integration, now=now)
    with transaction.atomic():
        control = ZoneControl.objects.select_for_update().filter(zone=zone).first()
        if control is not None and control.integration_id != integration.pk:
            raise SetpointConflict(
                f"zone {zone.name!r} is budgeted by integration {control.integration.name!r}; it must release it first"
            )
        if control is None:
            control = ZoneControl(zone=zone, integration=integration)
        control.current_a, control.power_kw = current_a, power_kw
        control.written_at, control.valid_until = now, valid_until
        control.save()
        SetpointRecord.objects.create(zone=zone, integration=integration, current_a=current_a, power_kw=power_kw,
                                      written_at=now, valid_until=valid_until)
    control.integration = integration
    return control


def zone_setpoint_release(*, integration: Integration, zone: Zone, now: dt.datetime) -> None:
    """Give the zone back to its configured limits; refused while it is in failsafe.

    Letting a release end a failsafe would be a way around the failsafe minimum duration.
    """
    integration_heartbeat(integration=integration, now=now)
    with transaction.atomic():
        control = ZoneControl.objects.select_for_update().select_related("integration").filter(zone=zone).first()
        if control is None:
            return
        if control.integration_id != integration.pk:
            raise SetpointConflict(f"zone {zone.name!r} is budgeted by integration {control.integration.name!r}")
        if watchdog.failsafe_since(control, control.integration, now) is not None:
            raise SetpointConflict(f"zone {zone.name!r} is in failsafe: write a new setpoint after the minimum "
                                   "failsafe duration instead")
        control.delete()
        SetpointRecord.objects.create(zone=zone, integration=integration, written_at=now, released=True)
