"""Boot step of the transactions app (see chargers.hooks)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async

from transactions.services import transactions_close_after_reboot


async def boot_step_close_open_sessions(
    call: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]], charger_pk: int
) -> list[int]:
    """A charger that boots has ended every session it had open: close ours (see services)."""
    return await database_sync_to_async(transactions_close_after_reboot)(charger_pk=charger_pk)
