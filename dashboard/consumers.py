"""Live dashboard pages: one websocket per open page, a full snapshot on connect, then deltas.

Why the consumer polls the database instead of waiting for events:
- every writer is covered, whichever process it runs in (the OCPP consumer, the Celery tick,
  the meter poller, the admin, the API, a shell), with no hook to forget and no edit to the
  hot OCPP path: an event published from a service can be lost (Redis hiccup, a writer that
  does not publish) and the page would then be wrong until reloaded, while a poll is right
  again at the next period;
- the cost is bounded and independent of the event rate: a handful of queries per poll,
  shared by every page of the process (`shared`), where a busy site emits hundreds of events
  per second. The period adapts to what a poll costs (POLL_S_MIN, 0.5 s, on a small site, up
  to POLL_S_MAX), so the live view never takes more than 1/POLL_COST_SHARE of a core.
Fragments are the templates of the first render, re-rendered only when their data changed
and sent only when their text changed. Single records (tiles, a charger's live block) go out
at the next poll; the zone tree — a list that changes with every meter reading — at most
every LIST_EVERY_S.
Roles: the websocket checks the same permission as the page, at connect and every RECHECK_S
(a removed role or a deactivated account stops the stream; a changed role redraws the buttons the
fragments offer, such as the VIP toggle), and is behind the Origin check
(evce/asgi.py) so that another site cannot open it with the user's cookie.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.template.loader import render_to_string

from dashboard import roles, selectors
from evce import clock

logger = logging.getLogger(__name__)

# The poll period follows what a poll costs: POLL_S_MIN on a small site, up to POLL_S_MAX when
# reading and rendering take longer, so the live view never takes more than 1/POLL_COST_SHARE
# of a core (measured: bench/bench_dashboard.py).
POLL_S = 1.0
POLL_S_MIN = 0.5
POLL_S_MAX = 2.0
POLL_COST_SHARE = 8.0
LIST_EVERY_S = 3.0
PING_EVERY_S = 5.0
RECHECK_S = 30.0
CLOSE_DENIED = 4403
CLOSE_GONE = 4404


T = TypeVar("T")
_shared: dict[str, tuple[float, Any]] = {}
_shared_lock = threading.Lock()


def shared(key: str, build: Callable[[], T], max_age_s: float = POLL_S_MIN * 0.9) -> T:
    """One read per poll for every page of this process: two wall screens cost what one does."""
    with _shared_lock:
        cached = _shared.get(key)
        if cached is not None and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
        value = build()
        _shared[key] = (time.monotonic(), value)
        return value


def user_may_view(user_pk: int | None) -> bool:
    """Fresh from the database: the role may have been removed since the page was opened."""
    if user_pk is None:
        return False
    user = get_user_model().objects.filter(pk=user_pk, is_active=True).first()
    return user is not None and user.has_perm(roles.VIEW)


def user_abilities(user_pk: int | None) -> dict[str, bool]:
    """What the fragments may offer this user (the VIP toggle); the views check again on POST."""
    user = get_user_model().objects.filter(pk=user_pk, is_active=True).first() if user_pk is not None else None
    return roles.abilities(user) if user is not None else {"can_operate": False, "can_configure": False}


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Streams one page: `site` (summary, zones, tiles) or `charger` (its live block)."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        self.user_pk: int | None = user.pk if user is not None and user.is_authenticated else None
        await self.accept()
        if not await database_sync_to_async(user_may_view)(self.user_pk):
            await self.close(code=CLOSE_DENIED)  # accepted first, so the page can tell "denied" from "down"
            return
        self.abilities = await database_sync_to_async(user_abilities)(self.user_pk)
        self.page: str = self.scope["url_route"]["kwargs"]["page"]
        self.charger_pk: int | None = self.scope["url_route"]["kwargs"].get("pk")
        self.sent: dict[str, str] = {}
        self.drawn: dict[str, object] = {}  # the data each fragment was last rendered from
        self.order: list[str] = []
        self.problems: list[str] = []
        self.task: asyncio.Task[None] | None = asyncio.ensure_future(self.stream())

    async def disconnect(self, code: int) -> None:
        task = getattr(self, "task", None)
        if task is not None:
            task.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The page sends nothing; anything received is ignored."""

    async def stream(self) -> None:
        last_list = last_sent = last_check = 0.0
        while True:
            started = time.monotonic()
            try:
                if started - last_check >= RECHECK_S and last_check:
                    if not await database_sync_to_async(user_may_view)(self.user_pk):
                        await self.close(code=CLOSE_DENIED)
                        return
                    abilities = await database_sync_to_async(user_abilities)(self.user_pk)
                    if abilities != self.abilities:  # a role changed: buttons follow (the views check anyway)
                        self.abilities = abilities
                        self.drawn.clear()
                    last_check = started
                last_check = last_check or started
                with_lists = started - last_list >= LIST_EVERY_S
                update = await database_sync_to_async(self.build)(with_lists)
                if with_lists:
                    last_list = started
                if update is None:
                    await self.close(code=CLOSE_GONE)
                    return
                if update:
                    await self.send_json({"type": "update", **update})
                    last_sent = started
                elif started - last_sent >= PING_EVERY_S:
                    await self.send_json({"type": "ping"})
                    last_sent = started
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed read must not end the stream: the page says it is stale meanwhile
                logger.exception("dashboard live stream of %s failed; retrying", self.page)
                await asyncio.sleep(POLL_S_MAX)  # the longest period before the next try: no log flood
            spent = time.monotonic() - started
            period = min(POLL_S_MAX, max(POLL_S_MIN, POLL_COST_SHARE * spent))
            await asyncio.sleep(max(0.05, period - spent))

    # --- building the fragments (sync, in a worker thread) ---------------------------------

    def build(self, with_lists: bool) -> dict[str, Any] | None:
        """What changed since the last message: {} when nothing, None when the page's object is gone."""
        if self.page == "charger":
            return self._charger()
        if self.page == "session":
            return self._session()
        return self._site(with_lists)

    def _render(self, key: str, data: object, template: str, context: dict[str, Any]) -> str:
        """Render a fragment only when its data changed: rendering, not reading, is the cost."""
        if key in self.sent and self.drawn.get(key) == data:
            return self.sent[key]
        self.drawn[key] = data
        return render_to_string(template, context)

    def _site(self, with_lists: bool) -> dict[str, Any]:
        now = clock.now()
        tiles = shared("tiles", lambda: selectors.charger_tiles(now=now))
        regions: dict[str, str] = {}
        if with_lists:
            zones, self.problems = shared("zones", lambda: selectors.zone_views(now=now, tiles=tiles),
                                          max_age_s=LIST_EVERY_S * 0.9)
            overview = selectors.Overview(zones=zones, tiles=tiles, problems=self.problems)
            regions["zones"] = self._render("zones", zones, "dashboard/_zones.html", {"overview": overview})
        overview = selectors.Overview(zones=[], tiles=tiles, problems=self.problems)
        summary = (overview.online, len(tiles), overview.charging, round(overview.power_kw, 1), self.problems)
        regions["summary"] = self._render("summary", summary, "dashboard/_summary.html", {"overview": overview})
        items = {tile.dom_id: self._render(tile.dom_id, tile, "dashboard/_tile.html",
                                             {"tile": tile, **self.abilities})
                 for tile in tiles}
        return self._delta(regions, items)

    def _charger(self) -> dict[str, Any] | None:
        from dashboard.views import charger_live_context  # noqa: PLC0415 - views import this module's neighbours

        context = charger_live_context(self.charger_pk or 0)
        if context["tile"] is None:
            return None
        return self._delta({"charger-live": render_to_string("dashboard/_charger_live.html",
                                                               {**context, **self.abilities})}, {})

    def _session(self) -> dict[str, Any] | None:
        """The session's figures, and `curve` (the time of its latest sample) when the chart has new points:
        the page then re-reads the curve (one request per new meter value, not per poll)."""
        from dashboard.history import session_live_context  # noqa: PLC0415 - views import this module's neighbours

        context = session_live_context(self.charger_pk or 0)
        if context is None:
            return None
        update = self._delta({"session-live": render_to_string("dashboard/_session_live.html",
                                                                {**context, **self.abilities})}, {})
        latest = context["session"].last_sample_at
        version = latest.isoformat() if latest is not None else ""
        if self.sent.get("curve") != version:
            self.sent["curve"] = version
            update["curve"] = version
        return update

    def _delta(self, regions: dict[str, str], items: dict[str, str]) -> dict[str, Any]:
        update: dict[str, Any] = {}
        changed_regions = {key: html for key, html in regions.items() if self.sent.get(key) != html}
        changed_items = {key: html for key, html in items.items() if self.sent.get(key) != html}
        removed = [key for key in self.order if key not in items]
        order = list(items)
        if changed_regions:
            update["regions"] = changed_regions
        if changed_items:
            update["items"] = changed_items
        if removed:
            update["removed"] = removed
            for key in removed:
                self.sent.pop(key, None)
                self.drawn.pop(key, None)
        if order != self.order and items:
            update["order"] = order
        self.order = order
        self.sent.update(changed_regions)
        self.sent.update(changed_items)
        return update
