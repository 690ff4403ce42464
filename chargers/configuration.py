"""Automatic configuration of a charger once it is accepted (and after each boot).

Load management needs chargers to report energy, power and per-phase current often
enough: the keys to set are data (AutoConfigurationKey), edited in the admin.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from channels.db import database_sync_to_async

from chargers import services
from chargers.batcher import Batcher
from chargers.commands import CallFailed
from chargers.loops import PerLoop

logger = logging.getLogger(__name__)

CallFn = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


async def apply_auto_configuration(call: CallFn, *, charger_pk: int,
                                   keys: Sequence[tuple[str, str]] | None = None) -> dict[str, str]:
    """Set every enabled key (`keys`, or read them), read back the full configuration, then
    record it all in one transaction (services.configuration_outcomes_record). A charger that
    goes away in the middle records nothing: its next boot configures it again."""
    if keys is None:
        keys = await database_sync_to_async(services.auto_configuration_keys)()
    outcomes: dict[str, str] = {}
    for key, value in keys:
        try:
            result = await call("ChangeConfiguration", {"key": key, "value": value})
            status = str(result.get("status", "?"))
        except CallFailed as error:
            status = f"Failed: {error}"[:30]
        outcomes[key] = status
    read = None
    try:
        answer = await call("GetConfiguration", {})
    except CallFailed as error:
        logger.warning("GetConfiguration failed for charger %s: %s", charger_pk, error)
    else:
        read = services.configuration_read_back(answer.get("configurationKey", []))
    changes = tuple((key, value, outcomes[key]) for key, value in keys)
    await outcomes_recorded().submit(services.ConfigurationOutcome(charger_pk, changes, read))
    return outcomes


async def boot_step_auto_configuration(call: CallFn, charger_pk: int) -> dict[str, str]:
    """Boot step (see chargers.hooks): configure the charger that just booted.

    A charger whose stored configuration already holds every wanted value (set and read
    back at an earlier boot) is only asked for those keys: when it still holds them,
    nothing is changed or written (one call instead of one per key plus a full read and
    its writes, which is what a reconnect storm of thousands of chargers repeats).
    """
    wanted, stored = await wanted_and_stored().submit(charger_pk)
    if wanted and all(stored.get(key) == value for key, value in wanted.items()):
        try:
            answer = await call("GetConfiguration", {"key": sorted(wanted)})
        except CallFailed:
            answer = {}
        held = {str(item.get("key")): str(item.get("value") or "") for item in answer.get("configurationKey", [])}
        if all(held.get(key) == value for key, value in wanted.items()):
            return {key: "Unchanged" for key in wanted}
    return await apply_auto_configuration(call, charger_pk=charger_pk, keys=list(wanted.items()))


def _wanted_and_stored(charger_pks: Sequence[int]) -> dict[int, tuple[dict[str, str], dict[str, str]]]:
    """Per charger: (the keys to set and their values, what it stores of them), for the chargers
    booting together in two queries."""
    wanted = dict(services.auto_configuration_keys())
    stored = services.configuration_values_many(charger_pks=charger_pks, keys=list(wanted))
    return {pk: (wanted, stored.get(pk, {})) for pk in charger_pks}


# The configuration reads of the running event loop's booting chargers, in batches (chargers.batcher).
wanted_and_stored = PerLoop(lambda: Batcher(_wanted_and_stored, max_batch=500, name="reading configurations"))


def _record_outcomes(outcomes: Sequence[services.ConfigurationOutcome]) -> dict[services.ConfigurationOutcome, None]:
    """The outcomes of the chargers configured together, recorded in one transaction (in the
    order they were submitted: a charger's later configuration wins)."""
    services.configuration_outcomes_record(outcomes=outcomes)
    return dict.fromkeys(outcomes)


# What the running event loop's chargers' configurations found, recorded in batches: a storm of
# new chargers otherwise commits one transaction per charger (7 % of its database thread's time).
outcomes_recorded = PerLoop(lambda: Batcher(_record_outcomes, max_batch=200, name="recording configurations"))
