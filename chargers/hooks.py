"""What runs after a charger's BootNotification is accepted, in order.

Other apps add their steps in their AppConfig.ready() (load management puts the safe
default charging profile first). Each step gets a `call(action, payload)` function that
talks to this charger and its primary key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

CallFn = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
BootStep = Callable[[CallFn, int], Awaitable[object]]

BOOT_ACCEPTED_STEPS: list[BootStep] = []


def add_boot_step(step: BootStep, *, first: bool = False) -> None:
    if step in BOOT_ACCEPTED_STEPS:
        return
    if first:
        BOOT_ACCEPTED_STEPS.insert(0, step)
    else:
        BOOT_ACCEPTED_STEPS.append(step)
