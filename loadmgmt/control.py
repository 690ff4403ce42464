"""One tick of the control loop: gather → allocate (pure) → plan → send → record."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from channels.db import database_sync_to_async

from chargers.hooks import CallFn
from chargers.models import Charger
from evce import clock
from loadmgmt import apply, engine, inputs, profiles, safety, services
from loadmgmt.models import SiteSettings, Zone

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickReport:
    sessions: int
    paused: int
    sent: int
    failed: int
    problems: list[str]


def run_tick(now: dt.datetime) -> TickReport:
    """Run the loop once. The audit re-checks the engine's promises on live data every tick."""
    gathered = inputs.gather(now)
    allocation = engine.allocate([z.zone for z in gathered.zones], gathered.sessions, gathered.policy,
                                 now.timestamp())
    problems = engine.check_allocation([z.zone for z in gathered.zones], gathered.sessions, allocation)
    for problem in problems:
        logger.error("allocation audit: %s", problem)
    if allocation.last_rotation_at != gathered.policy.last_rotation_at:
        services.site_record_rotation(last_rotation_at=allocation.last_rotation_at)
    safe_limits = safety.safe_defaults(gathered.zone_rows, gathered.chargers, gathered.settings)
    commands = apply.plan(gathered, allocation, safe_limits, now)
    apply.send(commands)
    apply.record(gathered, allocation, commands, now)
    failed = sum(1 for command in commands if command.status != "Accepted")
    return TickReport(
        sessions=len(gathered.sessions),
        paused=sum(1 for limit in allocation.limits.values() if limit.paused),
        sent=len(commands),
        failed=failed,
        problems=problems,
    )


async def boot_step_safe_default(call: CallFn, charger_pk: int) -> None:
    """Boot step (chargers.hooks): give a charger its safe TxDefaultProfile before any session."""
    charger, limit, unit = await database_sync_to_async(_safe_default_for)(charger_pk)
    if charger is None:
        return
    try:
        payload = profiles.tx_default_payload(limit, charger.phases, unit)
        answer = await call("SetChargingProfile", payload)
        status = str(answer.get("status", "?"))
    except Exception as error:  # recorded, and retried by the loop
        status = f"{type(error).__name__}: {error}"[:40]
    await database_sync_to_async(services.applied_limit_record)(
        charger_pk=charger_pk, connector_id=0, purpose=profiles.TX_DEFAULT, transaction_id=None, limit_a=limit,
        paused=False, state_since=0.0, status=status, now=clock.now(),
    )


def _safe_default_for(charger_pk: int) -> tuple[Charger | None, float, str]:
    charger = Charger.objects.filter(pk=charger_pk, zone__isnull=False).first()
    if charger is None:
        return None, 0.0, "A"
    limit = safety.safe_defaults(list(Zone.objects.all()), [charger], SiteSettings.load())[charger.pk]
    return charger, limit, inputs.charger_rate_units([charger_pk]).get(charger_pk, "A")
