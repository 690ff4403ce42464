"""One tick of the control loop: gather → allocate (pure) → plan (pure) → record → hand over.

The tick never waits on the network: profiles are recorded as pending, handed to the processes
holding the websockets, and their answers update the live state when they arrive. A tick
therefore takes the time of its database reads and writes only, whatever the chargers do.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from chargers.batcher import Batcher
from chargers.commands import ChargerCallError, ChargerOffline
from chargers.hooks import CallFn
from chargers.loops import PerLoop
from evce import clock
from loadmgmt import apply, engine, inputs, profiles, services
from loadmgmt.models import AnswerStatus, LimitState, SiteSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickReport:
    sessions: int
    paused: int
    sent: int
    waiting: int
    over: list[str]
    problems: list[str]
    duration_ms: float
    reserved: int = 0
    expired: int = 0
    details: dict[str, str] = field(default_factory=dict)


def run_tick(now: dt.datetime) -> TickReport:
    """Run the loop once. The audit re-checks the engine's promises on live data every tick."""
    started = time.perf_counter()
    expired = services.limit_expire_unanswered(now=now)
    gathered = inputs.gather(now)
    zones = gathered.engine_zones()
    allocation = engine.allocate(zones, gathered.sessions, gathered.policy, now.timestamp())
    problems = [*gathered.problems, *engine.check_allocation(zones, gathered.sessions, allocation)]
    for problem in problems:
        logger.error("control loop: %s", problem)
    if allocation.last_rotation_at != gathered.policy.last_rotation_at:
        services.site_record_rotation(last_rotation_at=allocation.last_rotation_at)
    tick = apply.plan_and_send(gathered, allocation, now)
    apply.record_decisions(gathered, allocation, tick, now)
    _log_over(tick.sessions.over)
    return TickReport(
        sessions=len(gathered.sessions),
        paused=sum(1 for limit in allocation.limits.values() if limit.paused),
        sent=len(tick.outgoing),
        waiting=len(tick.sessions.waiting),
        over=tick.sessions.over,
        problems=problems,
        duration_ms=(time.perf_counter() - started) * 1000,
        reserved=len(gathered.reserved),
        expired=expired,
    )


_last_over: list[str] = []


def _log_over(over: list[str]) -> None:
    """Held limits over capacity: a warning when it starts or changes, not at every tick."""
    global _last_over
    if over and over != _last_over:
        logger.warning("control loop: held limits over capacity, decreases sent: %s", ", ".join(over))
    elif not over and _last_over:
        logger.info("control loop: held limits back within capacity")
    _last_over = list(over)


async def boot_step_safe_default(call: CallFn, charger_pk: int) -> None:
    """Boot step (chargers.hooks): give a booted charger a safe TxDefaultProfile first of all.

    It must be cheap (a reconnect storm boots thousands of chargers at once) and it may never raise
    anyone: it sends the lower of the default the loop last wanted for this charger and the one
    in force, or 0 A when nothing is known (a new charger, a site just commissioned). Then the loop
    runs, plans every default together (others lowered before anyone is raised) and raises this
    one to its share within a second.

    The default is recorded as pending before it is sent (from then on it counts as held until
    an answer settles it), together with those of the chargers booting meanwhile: one transaction
    for all of them (`boot_defaults`). The answer is queued to the loop's answer recorder, which
    records it with the others arriving meanwhile and then asks for one re-balance. A failure or a
    timeout stays counted (the safe side).
    """
    planned = await boot_defaults().submit(charger_pk)
    if planned is None:
        return
    ticket, payload = planned
    try:
        answer = await call("SetChargingProfile", payload)
        outcome, detail = apply.outcome_of({"status": "ok", "payload": answer})
    except ChargerCallError as error:
        outcome, detail = AnswerStatus.CALL_ERROR, str(error)
    except ChargerOffline as error:
        outcome, detail = AnswerStatus.OFFLINE, str(error)
    except Exception as error:  # timeout or worse: it may have been applied, so it stays counted
        outcome, detail = AnswerStatus.NO_ANSWER, f"{type(error).__name__}: {error}"
    from loadmgmt.tasks import ANSWERS  # noqa: PLC0415 - tasks imports control

    ANSWERS.submit(services.Answer(ticket, outcome, detail), rebalance=True)


def boot_default_a(state: LimitState | None) -> float:
    """The default a booting charger gets at once: never more than it holds or the loop wanted."""
    if state is None or state.wanted_a is None or state.in_force_a is None:
        return 0.0
    return min(state.wanted_a, state.in_force_a)


Planned = tuple[services.SendTicket, dict[str, object]]


def record_boot_defaults(charger_pks: Sequence[int]) -> dict[int, Planned | None]:
    """The safe defaults of these booting chargers, recorded as pending in one transaction: charger
    pk -> (its ticket, the SetChargingProfile payload to send), None for a charger that is gone."""
    found: dict[int, tuple[int, str]] = {}  # charger pk -> (phases, rate unit); a charger gone is not found
    for chunk in services.chunks(list(charger_pks)):
        found.update(inputs.charger_phases_and_rate_units(chunk))
    tickets = services.limit_boot_defaults_record({pk: unit for pk, (_phases, unit) in found.items()},
                                                  boot_default_a, now=clock.now(),
                                                  timeout_s=SiteSettings.load().answer_timeout_s)
    planned: dict[int, Planned | None] = dict.fromkeys(charger_pks)
    for pk, ticket in tickets.items():
        phases, unit = found[pk]
        planned[pk] = ticket, profiles.tx_default_payload(ticket.limit_a, phases, unit)
    return planned


# The boot defaults of the running event loop's chargers, recorded in batches (one per process).
boot_defaults = PerLoop(lambda: Batcher(record_boot_defaults, max_batch=services.BATCH_ROWS // 4,
                                        name="recording boot defaults"))
