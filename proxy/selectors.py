"""Reads of the proxy app: link status for the admin and the dashboard, composite schedules."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Count

from chargers.models import Charger
from loadmgmt.models import LimitState
from loadmgmt.profiles import VOLTAGE_V
from proxy.caps import StoredProfile, composite_periods
from proxy.models import UpstreamLink, UpstreamProfile
from proxy.services import active_transaction


@dataclass(frozen=True)
class LinkStatus:
    charge_point_id: str
    backend: str
    role: str
    identity: str
    connected: bool
    since: dt.datetime | None
    queue_depth: int
    last_error: str
    enabled: bool


def link_statuses() -> list[LinkStatus]:
    """Every upstream link with its state, for the dashboard's panel."""
    links = (UpstreamLink.objects.select_related("charger", "backend").annotate(depth=Count("queue"))
             .order_by("charger__charge_point_id", "backend__name"))
    return [LinkStatus(charge_point_id=link.charger.charge_point_id, backend=link.backend.name, role=link.role,
                       identity=link.identity(link.charger.charge_point_id),
                       # A link runs only while its charger is connected (flags of a crashed process are stale).
                       connected=link.connected and link.charger.connected,
                       since=link.status_since, queue_depth=link.depth,
                       last_error=link.last_error, enabled=link.enabled and link.backend.enabled)
            for link in links]


def _local_limit_a(charger: Charger, connector_id: int, transaction_id: int | None) -> float:
    """What the local loop has in force on the connector (its TxProfile, else the safe default)."""
    states = {s.connector_id: s for s in LimitState.objects.filter(charger=charger, connector_id__in={0, connector_id})}
    own = states.get(connector_id)
    if connector_id > 0 and own is not None and own.in_force_a is not None and own.transaction_id == transaction_id \
            and transaction_id is not None:
        return float(own.in_force_a)
    default = states.get(0)
    if default is not None and default.in_force_a is not None:
        return float(default.in_force_a)
    return float(charger.rated_max_current_a)


def composite_schedule(*, link_pk: int, charger_pk: int, connector_id: int, duration_s: int, unit: str | None,
                       now: dt.datetime) -> dict[str, Any]:
    """GetCompositeSchedule for a backend: the lower of the local limit in force and its own profiles."""
    charger = Charger.objects.get(pk=charger_pk)
    transaction_id = active_transaction(charger_pk=charger_pk, connector_id=connector_id) if connector_id else None
    tx_start = None
    if transaction_id is not None:
        from transactions.models import Transaction  # noqa: PLC0415

        tx_start = Transaction.objects.filter(pk=transaction_id).values_list("start_time", flat=True).first()
    profiles = [StoredProfile(connector_id=row.connector_id, purpose=row.purpose, stack_level=row.stack_level,
                              transaction_id=row.transaction_id, profile=row.profile)
                for row in UpstreamProfile.objects.filter(link_id=link_pk, awaiting_id_tag="")]
    phases = int(charger.phases or 3)
    periods = composite_periods([profiles], connector_id, now, duration_s, phases=phases,
                                local_a=_local_limit_a(charger, connector_id, transaction_id),
                                transaction_id=transaction_id, tx_start=tx_start)
    rate_unit = unit if unit in {"A", "W"} else "A"
    factor = VOLTAGE_V * phases if rate_unit == "W" else 1.0
    return {
        "status": "Accepted", "connectorId": connector_id, "scheduleStart": now.isoformat(),
        "chargingSchedule": {
            "duration": duration_s, "startSchedule": now.isoformat(), "chargingRateUnit": rate_unit,
            "chargingSchedulePeriod": [{"startPeriod": start, "limit": round(limit * factor, 1)}
                                       for start, limit in periods],
        },
    }
