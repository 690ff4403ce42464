"""The relay of one charger connection to its upstream backends (chargers.hooks.RELAY_OPENERS).

Opened when the charger's websocket is accepted, closed when it disconnects: the backends see
the charger's real presence. A charger without enabled links gets an idle relay (no task, no
connection; it only notes the charger's boot) so that a link added or enabled in the admin while
it is connected opens within RECONCILE_S, like any other change of the configuration.

Every charger CALL the consumer answered is handed to each link in order, with transaction ids
the links map themselves. Only the primary's answer to Authorize, StartTransaction and
DataTransfer is awaited, at most the backend's message timeout, and only while its link is up;
it replaces the local answer. Otherwise the local answer stands (and a Start is queued for the
backend like any transaction message).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async

from chargers.hooks import ReplyCallFn
from chargers.loops import PerLoop
from evce import clock
from proxy import services
from proxy.link import LinkRunner, Outgoing

logger = logging.getLogger(__name__)

DECIDED_BY_PRIMARY = frozenset({"Authorize", "StartTransaction", "DataTransfer"})
ID_TAG_STATUSES = frozenset({"Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"})
DATA_TRANSFER_STATUSES = frozenset({"Accepted", "Rejected", "UnknownMessageId", "UnknownVendorId"})


# Link and backend changes made in the admin reach the relays of this process this often.
RECONCILE_S = 5.0
_relays: dict[int, UpstreamRelay] = {}  # every connected charger of this process, proxied or not
_reconciler: asyncio.Task[None] | None = None


class _LinkReads:
    """Connect-time reads of chargers' links, coalesced: the chargers that connect while one read
    runs are read together by the next (a reconnect storm costs a few queries, not one per charger).
    Each charger's links are still read after it connected. The reads run on the process's
    database thread, one statement between its batches: a pool thread of their own held a
    database connection (and a thread) of its own for the process's life."""

    def __init__(self) -> None:
        self._waiting: dict[int, list[asyncio.Future[list[services.LinkConfig]]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def configs(self, charger_pk: int) -> list[services.LinkConfig]:
        future: asyncio.Future[list[services.LinkConfig]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(charger_pk, []).append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        return await future

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            pks = list(batch)
            try:
                configs = await database_sync_to_async(services.link_configs_of)(charger_pks=pks)
            except Exception as error:  # noqa: BLE001 - every charger of the batch gets it
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(error)
                continue
            for pk, futures in batch.items():
                for future in futures:
                    if not future.done():
                        future.set_result(configs.get(pk, []))


_link_reads = PerLoop(_LinkReads)


async def open_relay(charger_pk: int, charge_point_id: str, call: ReplyCallFn) -> UpstreamRelay:
    global _reconciler
    configs = await _link_reads().configs(charger_pk)
    booted = bool(configs) and await database_sync_to_async(services.charger_booted)(charger_pk=charger_pk)
    relay = UpstreamRelay(charger_pk, charge_point_id, call, configs, booted=booted)
    relay.start()
    _relays[charger_pk] = relay
    if _reconciler is None or _reconciler.done():
        _reconciler = asyncio.ensure_future(_reconcile_forever())
    return relay


async def _reconcile_forever() -> None:
    """One query per period for the connected chargers of this process: links added, enabled,
    changed, disabled or deleted in the admin are started, restarted or stopped."""
    while _relays:
        await asyncio.sleep(RECONCILE_S)
        try:
            configs = await database_sync_to_async(services.link_configs_all)()
            for charger_pk, relay in list(_relays.items()):
                await relay.reconcile(configs.get(charger_pk, []))
        except Exception:  # the database is away for a moment: the links run on as they are
            logger.exception("upstream links: reconciling with the configuration failed")


def data_transfer_answer(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A backend's DataTransfer answer, kept to what OCPP 1.6 allows (the charger gets it as is)."""
    if value is None or value.get("status") not in DATA_TRANSFER_STATUSES:
        return None
    answer: dict[str, Any] = {"status": value["status"]}
    if isinstance(value.get("data"), str):
        answer["data"] = value["data"]
    return answer


def id_tag_info(value: object) -> dict[str, Any] | None:
    """A backend's idTagInfo, kept to what OCPP 1.6 allows (the charger gets it as is)."""
    if not isinstance(value, dict) or value.get("status") not in ID_TAG_STATUSES:
        return None
    info: dict[str, Any] = {"status": value["status"]}
    for key in ("expiryDate", "parentIdTag"):
        if isinstance(value.get(key), str) and len(value[key]) <= (20 if key == "parentIdTag" else 40):
            info[key] = value[key]
    return info


class UpstreamRelay:
    def __init__(self, charger_pk: int, charge_point_id: str, call: ReplyCallFn,
                 configs: list[services.LinkConfig], *, booted: bool) -> None:
        self.charger_pk = charger_pk
        self.charge_point_id = charge_point_id
        self.call = call
        # Whether the charger booted; an Event only once a link waits for it (most relays have no
        # link: an Event and its waiters' deque were 0.8 KB per connected charger).
        self._booted = booted
        self._booted_event: asyncio.Event | None = None
        self.links = [LinkRunner(self, config) for config in configs]
        self.primary = next((link for link in self.links if link.config.primary), None)
        self.awaiting_remote_start = False
        self.closed = False

    def mark_booted(self) -> None:
        self._booted = True
        if self._booted_event is not None:
            self._booted_event.set()

    async def wait_booted(self) -> None:
        """Return once the charger has booted (at once if it has)."""
        if self._booted:
            return
        if self._booted_event is None:
            self._booted_event = asyncio.Event()
        await self._booted_event.wait()

    def start(self) -> None:
        for link in self.links:
            link.start()

    async def close(self) -> None:
        self.closed = True
        if _relays.get(self.charger_pk) is self:
            del _relays[self.charger_pk]
        await asyncio.gather(*(link.stop() for link in self.links), return_exceptions=True)

    async def reconcile(self, configs: list[services.LinkConfig]) -> None:
        """Run exactly the links of `configs`: changed ones are restarted (a new upstream connection)."""
        if self.closed or (not configs and not self.links):
            return
        if configs and not self.links and not self._booted and await database_sync_to_async(
                services.charger_booted)(charger_pk=self.charger_pk):
            self.mark_booted()  # its first link: the charger booted before, its boot can be replayed
        wanted = {config.link_pk: config for config in configs}
        keep: list[LinkRunner] = []
        stop: list[LinkRunner] = []
        for link in self.links:
            (keep if wanted.get(link.config.link_pk) == link.config else stop).append(link)
        await asyncio.gather(*(link.stop("changed in the configuration") for link in stop), return_exceptions=True)
        running = {link.config.link_pk for link in keep}
        if self.closed:  # the charger left while the changed links were stopping
            self.links = keep
            return
        for config in configs:
            if config.link_pk not in running:
                link = LinkRunner(self, config)
                link.start()
                keep.append(link)
        self.links = keep
        self.primary = next((link for link in self.links if link.config.primary), None)

    async def answered(self, action: str, request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any] | None:
        if not self.links and action != "BootNotification":
            return None  # an idle relay (no enabled link): nothing to tell anyone
        if action == "BootNotification":
            if answer.get("status") != "Accepted":
                return None
            if not self._booted:
                self.mark_booted()  # the links connect now and send this boot (stored by the local handler)
                return None
        local_tx = answer.get("transactionId") if action == "StartTransaction" else None
        transactional = services.is_transactional(action, request)
        decide = self.primary is not None and action in DECIDED_BY_PRIMARY and self.primary.connected
        decision: asyncio.Future[dict[str, Any] | None] | None = None
        for link in self.links:
            future = None
            if decide and link is self.primary:
                future = decision = asyncio.get_running_loop().create_future()
            link.submit(Outgoing(action, request, local_tx if isinstance(local_tx, int) else None, transactional,
                                 future))
        if action == "StartTransaction" and isinstance(local_tx, int):
            await self._started(request, local_tx)
        elif action == "StopTransaction" and isinstance(request.get("transactionId"), int):
            await database_sync_to_async(services.profiles_end_transaction)(transaction_id=request["transactionId"])
        if decision is None or self.primary is None:
            return None
        return await self._decided(action, answer, decision, local_tx)

    async def _decided(self, action: str, answer: dict[str, Any], decision: asyncio.Future[dict[str, Any] | None],
                       local_tx: object) -> dict[str, Any] | None:
        assert self.primary is not None  # noqa: S101
        try:
            upstream = await asyncio.wait_for(asyncio.shield(decision), self.primary.config.message_timeout_s)
        except TimeoutError:
            await self.primary.event(f"{action}: no answer in time, local decision")
            return None
        if action == "DataTransfer":
            return data_transfer_answer(upstream)
        info = id_tag_info((upstream or {}).get("idTagInfo"))
        if info is None:
            return None
        if action == "StartTransaction" and isinstance(local_tx, int):
            await database_sync_to_async(services.transaction_decided)(transaction_pk=local_tx, status=info["status"])
        return {**answer, "idTagInfo": info}

    async def _started(self, request: dict[str, Any], local_tx: int) -> None:
        """A RemoteStart's profile becomes the TxProfile cap of the transaction it started."""
        if not self.awaiting_remote_start:
            return
        bound = 0
        for link in self.links:
            bound += await database_sync_to_async(services.profiles_bind_remote_start)(
                link_pk=link.config.link_pk, id_tag=str(request.get("idTag", "")),
                connector_id=int(request.get("connectorId", 0)), transaction_id=local_tx)
        if bound:
            logger.info("%s: a RemoteStart profile caps transaction %s (%s)", self.charge_point_id, local_tx,
                        clock.now().isoformat())
