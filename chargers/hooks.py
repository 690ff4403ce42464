"""Extension points of the OCPP side: what runs after a boot, who hears of session changes.

What runs after a charger's BootNotification is accepted, in order.

Other apps add their steps in their AppConfig.ready() (load management puts the safe
default charging profile first). Each step gets a `call(action, payload)` function that
talks to this charger and its primary key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

CallFn = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
BootStep = Callable[[CallFn, int], Awaitable[object]]

BOOT_ACCEPTED_STEPS: list[BootStep] = []
# Steps added with first=True (safety: the default profile, closing stale sessions) run at
# once; the others may be spread out when many chargers boot together (a boot storm).
URGENT_BOOT_STEPS: set[BootStep] = set()


def add_boot_step(step: BootStep, *, first: bool = False) -> None:
    if step in BOOT_ACCEPTED_STEPS:
        return
    if first:
        URGENT_BOOT_STEPS.add(step)
        BOOT_ACCEPTED_STEPS.insert(0, step)
    else:
        BOOT_ACCEPTED_STEPS.append(step)


# Called (synchronously, in a worker thread) after sessions started or stopped, once per batch
# of chargers whose sessions changed together (their primary keys, each once): load management
# uses it to re-balance at once instead of at its next period. Once per batch, not per charger:
# a fleet starting together asks for one re-balance, not a Redis round trip per car.
SessionChangeListener = Callable[[Sequence[int]], object]
SESSION_CHANGE_LISTENERS: list[SessionChangeListener] = []


def add_session_change_listener(listener: SessionChangeListener) -> None:
    if listener not in SESSION_CHANGE_LISTENERS:
        SESSION_CHANGE_LISTENERS.append(listener)


# Called (synchronously) where a charger's websocket is, when a call sent with
# `outcome_hook=<name>` gets its outcome: (charger pk, the call's context, the reply message
# {"status": "ok"|"error"|"timeout"|"closed"|"failed", ...}). The control loop records answers to
# its charging profiles this way instead of waiting for them. Returns whatever it likes. A hook
# runs in a worker thread, unless added with `blocking=False`: it promises to return at once
# (queue and go, no database, no network) and runs on the event loop, saving a thread hop per
# answer (10,000 answers after a limit cut on 5,000 chargers).
CallOutcomeHook = Callable[[int, dict[str, Any], dict[str, Any]], object]
CALL_OUTCOME_HOOKS: dict[str, CallOutcomeHook] = {}
INLINE_OUTCOME_HOOKS: set[str] = set()


def add_call_outcome_hook(name: str, hook: CallOutcomeHook, *, blocking: bool = True) -> None:
    CALL_OUTCOME_HOOKS[name] = hook
    if blocking:
        INLINE_OUTCOME_HOOKS.discard(name)
    else:
        INLINE_OUTCOME_HOOKS.add(name)


# Relays of a charger's traffic to other systems (the upstream CPO proxy). An opener is called
# when a charger's websocket is accepted, with (charger pk, charge point id, call) where
# `call(action, payload, timeout_s)` sends a CALL to this charger and returns the reply message
# ({"status": "ok", "payload": …} or error/timeout/closed, as for outcome hooks); it returns a
# relay for this connection or None. The consumer tells the relay every charger CALL it answered
# (`answered`), in order, and may let it replace the answer (None keeps it): a relay must return at
# once unless it decides the answer, and then within its own bounded timeout. `close()` at disconnect.
class ChargerRelay(Protocol):
    async def answered(self, action: str, request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any] | None:
        ...

    async def close(self) -> None:
        ...


ReplyCallFn = Callable[[str, dict[str, Any], float | None], Awaitable[dict[str, Any]]]
RelayOpener = Callable[[int, str, ReplyCallFn], Awaitable[ChargerRelay | None]]
RELAY_OPENERS: list[RelayOpener] = []


def add_relay_opener(opener: RelayOpener) -> None:
    if opener not in RELAY_OPENERS:
        RELAY_OPENERS.append(opener)
