"""What a BEMS budget means at a given moment: setpoint, failsafe, expired, or nothing.

Time rules over fields and ``now`` (testable on unsaved objects, no I/O):

1. The heartbeat of an integration is *lost* once ``now`` passes its last heartbeat plus twice
   its interval; the loss starts at that instant.
2. Every zone the integration budgets is then in **failsafe** from the loss on: its budget is the
   integration's failsafe limit (default: the zone's fallback current). Nothing has to run for
   this to happen: the next reader sees it.
3. A zone leaves failsafe only when the heartbeat is back **and** a setpoint was written after
   the loss began **and** the failsafe minimum duration is over. Until then a new setpoint waits.
4. Out of failsafe, the setpoint is in force until ``valid_until`` (none: permanent), then the
   zone is back at its configured limits (*expired*).
5. A budget never exceeds the zone's configured breaker current or kW limit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from api.models import Integration, ZoneControl
from loadmgmt.capacity import lower_limit

SETPOINT = "setpoint"
FAILSAFE = "failsafe"
EXPIRED = "expired"
CONFIGURED = "configured"


@dataclass(frozen=True)
class ControlStatus:
    """What governs a zone's limit now, since when, until when, and why (for read-backs)."""

    source: str
    current_a: float | None
    power_kw: float | None
    since: dt.datetime | None
    until: dt.datetime | None
    note: str


def heartbeat_deadline(integration: Integration) -> dt.datetime | None:
    """The instant the heartbeat is lost unless a new one comes; None before the first one."""
    if integration.last_heartbeat_at is None:
        return None
    return integration.last_heartbeat_at + dt.timedelta(seconds=2 * integration.heartbeat_interval_s)


def heartbeat_lost_at(integration: Integration, now: dt.datetime) -> dt.datetime | None:
    """When the current loss began, or None while the heartbeat is alive."""
    deadline = heartbeat_deadline(integration)
    if deadline is None or now <= deadline:
        return None
    return deadline


def failsafe_cleared(control: ZoneControl, integration: Integration, now: dt.datetime) -> bool:
    """Rule 3: a recorded failsafe is over (newer setpoint written, minimum duration elapsed)."""
    since = control.failsafe_since
    if since is None:
        return True
    minimum_end = since + dt.timedelta(seconds=integration.failsafe_min_duration_s)
    return control.written_at > since and now >= minimum_end


def failsafe_since(control: ZoneControl, integration: Integration, now: dt.datetime) -> dt.datetime | None:
    """Start of the failsafe the zone is in at ``now``, or None."""
    recorded = None if failsafe_cleared(control, integration, now) else control.failsafe_since
    lost_at = heartbeat_lost_at(integration, now)
    if recorded is not None and lost_at is not None:
        return min(recorded, lost_at)
    return recorded or lost_at


def zone_control_status(
    control: ZoneControl | None, *, zone_max_current_a: float | None, zone_max_power_kw: float | None,
    zone_fallback_a: float, now: dt.datetime,
) -> ControlStatus:
    """Rules 2–5 for one zone (``control`` with its integration loaded; None: never budgeted)."""
    if control is None:
        return ControlStatus(CONFIGURED, None, None, None, None, "configured limits (no BEMS budget)")
    integration = control.integration
    name = integration.name
    since = failsafe_since(control, integration, now)
    if since is not None:
        failsafe_a = integration.failsafe_current_a if integration.failsafe_current_a is not None else zone_fallback_a
        until = since + dt.timedelta(seconds=integration.failsafe_min_duration_s)
        waiting = " (a newer setpoint waits for the end of the minimum)" if control.written_at > since else ""
        return ControlStatus(
            FAILSAFE, lower_limit(failsafe_a, zone_max_current_a),
            lower_limit(integration.failsafe_power_kw, zone_max_power_kw),
            since, until,
            f"BEMS '{name}' heartbeat lost at {since:%Y-%m-%d %H:%M:%S}: failsafe at least until "
            f"{until:%H:%M:%S}, then until the heartbeat is back and a new setpoint is written{waiting}",
        )
    if control.valid_until is not None and now >= control.valid_until:
        return ControlStatus(EXPIRED, None, None, control.valid_until, None,
                             f"BEMS '{name}' setpoint expired at {control.valid_until:%Y-%m-%d %H:%M:%S}: "
                             "configured limits")
    current = lower_limit(control.current_a, zone_max_current_a) if control.current_a is not None else None
    power = lower_limit(control.power_kw, zone_max_power_kw) if control.power_kw is not None else None
    until_text = "permanent" if control.valid_until is None else f"until {control.valid_until:%H:%M:%S}"
    clamped = ((control.current_a is not None and current is not None and current < control.current_a)
               or (control.power_kw is not None and power is not None and power < control.power_kw))
    return ControlStatus(
        SETPOINT, current, power, control.written_at, control.valid_until,
        f"BEMS '{name}' setpoint {until_text}" + (" (capped at the zone's configured limit)" if clamped else ""),
    )


def failsafe_marks_on_heartbeat(
    controls: list[ZoneControl], integration: Integration, now: dt.datetime
) -> dict[int, dt.datetime]:
    """Failsafe starts to record, per control pk, when a heartbeat ends a loss (rule 3 needs them).

    Without the record, the loss would be forgotten the moment the heartbeat comes back. A zone
    still in an earlier, unfinished failsafe keeps its earlier start.
    """
    lost_at = heartbeat_lost_at(integration, now)
    if lost_at is None:
        return {}
    return {control.pk: lost_at for control in controls if failsafe_cleared(control, integration, now)}
