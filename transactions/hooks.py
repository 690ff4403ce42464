"""Boot step of the transactions app (see chargers.hooks)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from chargers.batcher import Batcher
from chargers.loops import PerLoop
from transactions.services import transactions_close_after_reboot_many


async def boot_step_close_open_sessions(
    call: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]], charger_pk: int
) -> list[int]:
    """A charger that boots has ended every session it had open: close ours (see services).

    Together with the chargers booting meanwhile (a reconnect storm): one query finds the
    sessions to close for all of them, and those are closed in one transaction.
    """
    return await reboot_closes().submit(charger_pk)


def _close_after_reboot(charger_pks: Sequence[int]) -> dict[int, list[int]]:
    return transactions_close_after_reboot_many(charger_pks=charger_pks)


# The closes of the running event loop's booting chargers, in batches (one batcher per process).
reboot_closes = PerLoop(lambda: Batcher(_close_after_reboot, max_batch=500, name="closing sessions after reboots"))
