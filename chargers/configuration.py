"""Automatic configuration of a charger once it is accepted (and after each boot).

Load management needs chargers to report energy, power and per-phase current often
enough: the keys to set are data (AutoConfigurationKey), edited in the admin.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async

from chargers import services
from chargers.commands import CallFailed

logger = logging.getLogger(__name__)

CallFn = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


async def apply_auto_configuration(call: CallFn, *, charger_pk: int) -> dict[str, str]:
    """Set every enabled key, record each outcome, then read back the full configuration."""
    outcomes: dict[str, str] = {}
    for key, value in await database_sync_to_async(services.auto_configuration_keys)():
        try:
            result = await call("ChangeConfiguration", {"key": key, "value": value})
            status = str(result.get("status", "?"))
        except CallFailed as error:
            status = f"Failed: {error}"[:30]
        outcomes[key] = status
        await database_sync_to_async(services.configuration_record)(
            charger_pk=charger_pk, key=key, value=value, status=status
        )
    try:
        answer = await call("GetConfiguration", {})
    except CallFailed as error:
        logger.warning("GetConfiguration failed for charger %s: %s", charger_pk, error)
    else:
        await database_sync_to_async(services.configuration_store_read)(
            charger_pk=charger_pk, keys=list(answer.get("configurationKey", []))
        )
    return outcomes


async def boot_step_auto_configuration(call: CallFn, charger_pk: int) -> dict[str, str]:
    """Boot step (see chargers.hooks): configure the charger that just booted."""
    return await apply_auto_configuration(call, charger_pk=charger_pk)
