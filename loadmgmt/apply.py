"""From the allocation to the profiles sent: plan (pure), record, hand over, never wait.

1. Build one `Holder` per session connector (what it holds, what the allocation wants) and one
   per charger's safe default, and let the pure planner decide what may go now (decreases at
   once, increases only into room that exists with everybody at what they hold).
2. Record every send in the connector's live state *before* handing it over: from that moment
   it counts as held until an answer settles it.
3. Hand the calls to the processes holding the websockets (channel layer) and return: answers
   update the live state when they arrive (`loadmgmt.answers`), the tick never waits for them.
4. Record the decisions (wanted limit, reason, why it is not in force yet) and the history.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F, FloatField, Value
from django.db.models.functions import Greatest

from chargers.commands import Cast, cast_calls
from loadmgmt import profiles, services
from loadmgmt.engine import Allocation
from loadmgmt.engine.planning import Holder, Plan, Send, plan
from loadmgmt.inputs import LoopInputs
from loadmgmt.models import AnswerStatus, LimitState
from loadmgmt.safety import safe_default_targets

logger = logging.getLogger(__name__)
OUTCOME_HOOK = "loadmgmt.limit"
DEFAULT_HYSTERESIS_A = 0.1  # safe defaults change with the configuration only: follow it exactly


@dataclass
class Outgoing:
    """One SetChargingProfile to send, with where it goes and what it stands for."""

    charger_pk: int
    channel_name: str
    connector_id: int
    transaction_id: int | None
    limit_a: float
    rate_unit: str
    payload: dict[str, Any]
    kind: str
    status: str = ""


@dataclass
class TickPlan:
    sessions: Plan
    defaults: Plan
    outgoing: list[Outgoing]
    default_targets: dict[int, float]


def session_holders(inputs: LoopInputs, allocation: Allocation) -> list[Holder]:
    holders = list(inputs.reserved)
    for session_id, decision in allocation.limits.items():
        ctx = inputs.contexts[session_id]
        wanted = 0.0 if decision.paused else profiles.round_limit(decision.limit_a)
        holders.append(Holder(
            id=session_id, zone_id=ctx.zone_id, phases=ctx.phases, held_a=ctx.held_a, wanted_a=wanted,
            first=ctx.first, in_flight_a=ctx.in_flight_a, can_send=ctx.can_send, may_raise=ctx.may_raise,
            wanted_stable=ctx.state is not None and ctx.state.wanted_a == wanted,
            min_a=inputs.chargers[ctx.charger_pk].charger.min_current_a, priority=0 if ctx.vip else 1,
        ))
    return holders


def default_holders(inputs: LoopInputs, targets: dict[int, float], now: dt.datetime) -> list[Holder]:
    """One holder per charger's TxDefaultProfile (it applies to each of its connectors).

    A default is not raised while a session on that charger still runs on it (before its first
    own profile is in force): the session plan counted that session at the default it holds.
    An offline charger that never confirmed a default is left out of the sum: its share is
    already set aside by the targets (every managed charger counts there), and it gets that
    share, capped to the room the others leave, at its boot, before any session.
    """
    on_default = {c.charger_pk for c in inputs.contexts.values() if c.state is None or c.state.in_force_a is None}
    holders = []
    for pk, ctx in inputs.chargers.items():
        state = ctx.state
        wanted = targets.get(pk, 0.0)
        if pk in on_default:
            wanted = min(wanted, ctx.held_default_a)
        unknown = state is None or (state.in_force_a is None and state.pending_max_a is None)
        if unknown and not ctx.online:
            continue
        holders.append(Holder(
            id=f"default-{pk}", zone_id=ctx.zone_id, phases=ctx.charger.supply_phases, held_a=ctx.held_default_a,
            wanted_a=wanted, controllable=ctx.online, first=unknown and _in_flight(state, now) is None,
            in_flight_a=_in_flight(state, now),
            can_send=state is None or state.retry_at is None or state.retry_at <= now,
            may_raise=ctx.responsive, min_a=ctx.charger.min_current_a, count=ctx.connectors,
        ))
    return holders


def _in_flight(state: LimitState | None, now: dt.datetime) -> float | None:
    if state is None or state.pending_a is None:
        return None
    if state.pending_deadline is not None and state.pending_deadline < now:
        return None
    return state.pending_a


def plan_and_send(inputs: LoopInputs, allocation: Allocation, now: dt.datetime) -> TickPlan:
    """Plan and send: the sessions' profiles on their way before the defaults are planned.

    A limit cut's decreases for running sessions are what must reach the chargers at once; the
    safe defaults (what a connector without a session may draw, on static capacity) do not
    depend on them, so they are planned, recorded and handed over once the sessions' profiles
    are with the processes holding the websockets (on 5,000 chargers: ~0.5 s sooner).
    """
    sessions = plan_sessions(inputs, allocation)
    outgoing = [session_outgoing_for(inputs, item) for item in sessions.sends]
    send(outgoing, inputs, now)
    targets, defaults = plan_defaults(inputs, now)
    default_outgoing = [default_outgoing_for(inputs, item) for item in defaults.sends]
    send(default_outgoing, inputs, now)
    return TickPlan(sessions, defaults, [*outgoing, *default_outgoing], targets)


def plan_sessions(inputs: LoopInputs, allocation: Allocation) -> Plan:
    """What the running sessions' connectors may be sent now (decreases first, raises into room)."""
    return plan(inputs.engine_zones(), session_holders(inputs, allocation), hysteresis_a=inputs.settings.hysteresis_a)


def plan_defaults(inputs: LoopInputs, now: dt.datetime) -> tuple[dict[int, float], Plan]:
    """Each charger's safe-default target (charger pk -> A), and what its TxDefaultProfile may be sent now."""
    from loadmgmt.inputs import default_charger  # noqa: PLC0415 - avoid a cycle at import time

    targets = safe_default_targets(inputs.static_zones, [default_charger(c) for c in inputs.chargers.values()])
    return targets, plan(inputs.static_zones, default_holders(inputs, targets, now),
                         hysteresis_a=DEFAULT_HYSTERESIS_A)


def session_outgoing_for(inputs: LoopInputs, send: Send) -> Outgoing:
    ctx = inputs.contexts[send.holder_id]
    charger = inputs.chargers[ctx.charger_pk].charger
    payload = profiles.tx_payload(ctx.connector_id, ctx.transaction_id, send.limit_a, ctx.number_phases,
                                  ctx.rate_unit, ctx.phases_in_use)
    return Outgoing(ctx.charger_pk, charger.channel_name, ctx.connector_id, ctx.transaction_id, send.limit_a,
                    ctx.rate_unit, payload, send.kind)


def default_outgoing_for(inputs: LoopInputs, send: Send) -> Outgoing:
    pk = int(send.holder_id.removeprefix("default-"))
    ctx = inputs.chargers[pk]
    payload = profiles.tx_default_payload(send.limit_a, ctx.charger.phases, ctx.rate_unit)
    return Outgoing(pk, ctx.charger.channel_name, 0, None, send.limit_a, ctx.rate_unit, payload, send.kind)


def send(outgoing: list[Outgoing], inputs: LoopInputs, now: dt.datetime) -> None:
    """Record each profile as pending, then hand them all over without waiting for the answers.

    One transaction records every send (a few statements whatever their number), so the tick
    holds the database's write lock for milliseconds; the session profiles among them are handed
    over first (what a limit cut needs at once). The tick calls it twice (`plan_and_send`): the
    sessions' profiles, then the safe defaults'.
    """
    if not outgoing:
        return
    timeout = inputs.settings.answer_timeout_s
    sessions = [item for item in outgoing if item.transaction_id is not None]
    defaults = [item for item in outgoing if item.transaction_id is None]
    with transaction.atomic():  # one commit for the whole batch, not one per profile
        tickets = services.limit_sends_record(
            [services.SessionSend(i.charger_pk, i.connector_id, i.transaction_id or 0, i.limit_a, i.rate_unit)
             for i in sessions], now=now, timeout_s=timeout)
        tickets += services.limit_default_sends_record(
            [services.DefaultSend(i.charger_pk, i.limit_a, i.rate_unit) for i in defaults], now=now, timeout_s=timeout)
    _hand_over([*sessions, *defaults], tickets, timeout, now)


# A process's inbox on the channel layer holds `capacity` messages (500) for all its chargers; the
# process drains it at hundreds per second. A cut on thousands of chargers fills it: what did not
# fit is handed over again for this long, rather than failing and waiting for the next tick.
HANDOVER_RETRY_S = 5.0
HANDOVER_PAUSE_S = 0.1
HANDOVER_RETRY_CHUNK = 200
_FULL = "ChannelFull"


def _hand_over(items: list[Outgoing], tickets: list[services.SendTicket], timeout: float, now: dt.datetime) -> None:
    casts = [Cast(channel_name=item.channel_name, action="SetChargingProfile", payload=item.payload,
                  timeout_s=timeout, outcome_hook=OUTCOME_HOOK, context=ticket.as_context())
             for item, ticket in zip(items, tickets, strict=True)]
    errors = cast_calls(casts)
    deadline = time.monotonic() + HANDOVER_RETRY_S
    while (full := [n for n, error in enumerate(errors) if error and error.startswith(_FULL)]) \
            and time.monotonic() < deadline:
        time.sleep(HANDOVER_PAUSE_S)  # the inbox drains meanwhile; the order (sessions first) is kept
        retry = full[:HANDOVER_RETRY_CHUNK]  # what a drained inbox can take: no flood of refused sends
        for n, error in zip(retry, cast_calls([casts[n] for n in retry]), strict=True):
            errors[n] = error
    not_sent = []
    for item, ticket, error in zip(items, tickets, errors, strict=True):
        item.status = "sent" if error is None else f"not sent: {error}"
        if error is not None:
            logger.warning("SetChargingProfile to charger %s not handed over: %s", item.charger_pk, error)
            not_sent.append(services.Answer(ticket, AnswerStatus.NOT_SENT, error))
    services.limit_answers_record(not_sent, now=now)  # one transaction, however many failed


def record_decisions(inputs: LoopInputs, allocation: Allocation, tick: TickPlan, now: dt.datetime) -> None:
    """Store what each connector should get and why, and append changed decisions to the history."""
    with transaction.atomic():  # one commit for every row the tick touches
        _record_decisions(inputs, allocation, tick, now)


def _record_decisions(inputs: LoopInputs, allocation: Allocation, tick: TickPlan, now: dt.datetime) -> None:
    sent = {(o.charger_pk, o.connector_id): o for o in tick.outgoing}
    history: list[services.SetpointRow] = []
    rows: list[tuple[int, dict[str, object]]] = []
    fresh = _rows_of_new_sessions(inputs)
    for session_id, decision in allocation.limits.items():
        ctx = inputs.contexts[session_id]
        wanted = 0.0 if decision.paused else profiles.round_limit(decision.limit_a)
        waiting = tick.sessions.waiting.get(session_id, "")
        state = ctx.state or fresh.get((ctx.charger_pk, ctx.connector_id))
        if state is None or state.transaction_id != ctx.transaction_id:
            state = services.limit_state_for(charger_pk=ctx.charger_pk, connector_id=ctx.connector_id,
                                             transaction_id=ctx.transaction_id, state_since=decision.state_since)
        outgoing = sent.get((ctx.charger_pk, ctx.connector_id))
        changed = (state.wanted_a, state.wanted_paused, state.binding) != (wanted, decision.paused,
                                                                          decision.binding[:120])
        if changed or outgoing is not None:
            history.append(services.SetpointRow(
                timestamp=now, charger_id=ctx.charger_pk, connector_id=ctx.connector_id,
                transaction_id=ctx.transaction_id, limit_a=wanted, paused=decision.paused,
                binding=decision.binding[:120], overdraw=decision.overdraw, sent=outgoing is not None,
                status=(outgoing.status if outgoing else waiting)[:60]))
        fields = _decision_fields(state, wanted, decision.paused, decision.binding[:120], waiting[:160],
                                  decision.state_since, now)
        for name, value in fields.items():
            setattr(state, name, value)
        if fields:
            rows.append((state.pk, fields))
    defaults: dict[tuple[float, str], list[int]] = {}
    for pk, target in tick.default_targets.items():
        default = inputs.chargers[pk].state
        waiting = tick.defaults.waiting.get(f"default-{pk}", "")[:160]
        if default is not None and (default.wanted_a, default.waiting) != (target, waiting):
            defaults.setdefault((target, waiting), []).append(default.pk)
    services.lock_rows([pk for pk, _fields in rows] + [pk for pks in defaults.values() for pk in pks])
    _write_decisions(rows, now)
    # Safe defaults: one UPDATE per distinct (target, reason), not one per charger.
    for (target, waiting), pks in defaults.items():
        services.rows_update(pks, wanted_a=target, waiting=waiting, binding="safe default (static share)")
    services.setpoints_record(history)


# Fields of a session's row written together: a tick writes each group with one UPDATE per
# distinct value (a limit cut gives thousands of sessions a handful of distinct decisions).
_DECISION_GROUPS = (("wanted_a", "wanted_paused", "binding", "waiting"), ("state_since",),
                    ("run_seconds", "run_counted_at"))
_ACCRUED = "accrued"  # run_seconds += now - run_counted_at, computed by the database


def _write_decisions(changed: list[tuple[int, dict[str, object]]], now: dt.datetime) -> None:
    """Only the tick writes these fields (answers write others): one UPDATE per distinct value
    of each group of fields, never one per row (Django's bulk_update builds a CASE per row and
    field, which costs about a millisecond per row to compile)."""
    groups: dict[tuple[tuple[str, object], ...], list[int]] = {}
    for pk, fields in changed:
        for names in _DECISION_GROUPS:
            part = tuple((name, _ACCRUED if name == "run_seconds" else fields[name])
                         for name in names if name in fields)
            if part:
                groups.setdefault(part, []).append(pk)
    accrued = F("run_seconds") + Greatest(Value(0.0), Value(now.timestamp()) - F("run_counted_at"),
                                          output_field=FloatField())
    for part, pks in groups.items():
        services.rows_update(pks, **{name: accrued if name == "run_seconds" else value for name, value in part})


def _rows_of_new_sessions(inputs: LoopInputs) -> dict[tuple[int, int], LimitState]:
    """Rows of sessions that had none at gather time (created by this tick's sends), in one query."""
    new = [ctx for ctx in inputs.contexts.values() if ctx.state is None]
    if not new:
        return {}
    rows = LimitState.objects.filter(charger_id__among={c.charger_pk for c in new}, connector_id__gt=0)
    return {(row.charger_id, row.connector_id): row for row in rows}


def _decision_fields(
    state: LimitState, wanted: float, paused: bool, binding: str, waiting: str, state_since: float, now: dt.datetime
) -> dict[str, object]:
    """The fields of a session's row that changed; running time is booked on pause/run flips only."""
    fields: dict[str, object] = {}
    if (state.wanted_a, state.wanted_paused, state.binding, state.waiting) != (wanted, paused, binding, waiting):
        fields.update(wanted_a=wanted, wanted_paused=paused, binding=binding, waiting=waiting)
    if state.state_since != state_since:
        fields["state_since"] = state_since
    running_before = state.wanted_a is not None and not state.wanted_paused
    if running_before and paused and state.run_counted_at is not None:
        fields.update(run_seconds=state.run_seconds + max(0.0, now.timestamp() - state.run_counted_at),
                      run_counted_at=None)
    elif not paused and state.run_counted_at is None:
        fields["run_counted_at"] = now.timestamp()
    return fields


def outcome_of(reply: dict[str, Any]) -> tuple[str, str]:
    """The consumer's reply message (see chargers.consumers) as an AnswerStatus and a detail."""
    status = reply.get("status")
    if status == "ok":
        answer = str((reply.get("payload") or {}).get("status", ""))
        known = {AnswerStatus.ACCEPTED, AnswerStatus.REJECTED, AnswerStatus.NOT_SUPPORTED}
        return (answer, "") if answer in known else (AnswerStatus.REJECTED, f"unexpected status {answer!r}")
    if status == "error":
        return AnswerStatus.CALL_ERROR, f"{reply.get('code')}: {reply.get('description', '')}"
    if status == "timeout":
        return AnswerStatus.NO_ANSWER, "the charger did not answer in time"
    if status == "closed":
        return AnswerStatus.OFFLINE, "the charger disconnected before answering"
    return AnswerStatus.NOT_SENT, str(reply.get("description", status))
