"""The bare baseline: Daphne + a Channels consumer + the `ocpp` library's ChargePoint, no database.

What any OCPP 1.6J server on this stack costs before doing anything useful: the figures of
`bench/bench_ocpp.py` put the project beside it. It validates frames (the library's
schemas) and answers; it stores nothing and configures nothing.

Run: cd bench && python -m daphne bare_server:application
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(CHANNEL_LAYERS={}, INSTALLED_APPS=["channels"], USE_TZ=True)
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402
from ocpp.routing import on  # noqa: E402
from ocpp.v16 import ChargePoint, call_result  # noqa: E402
from ocpp.v16.enums import Action  # noqa: E402

_transaction_ids = itertools.count(1)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class BareChargePoint(ChargePoint):
    @on(Action.boot_notification)
    async def on_boot(self, **_: Any):
        return call_result.BootNotification(current_time=_now(), interval=300, status="Accepted")

    @on(Action.heartbeat)
    async def on_heartbeat(self):
        return call_result.Heartbeat(current_time=_now())

    @on(Action.status_notification)
    async def on_status(self, **_: Any):
        return call_result.StatusNotification()

    @on(Action.start_transaction)
    async def on_start(self, **_: Any):
        return call_result.StartTransaction(transaction_id=next(_transaction_ids), id_tag_info={"status": "Accepted"})

    @on(Action.meter_values)
    async def on_meter_values(self, **_: Any):
        return call_result.MeterValues()


class _Wire:
    def __init__(self, consumer: BareConsumer) -> None:
        self._consumer = consumer

    async def send(self, message: str) -> None:
        await self._consumer.send(text_data=message)


class BareConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.cp = BareChargePoint(self.scope["url_route"]["kwargs"]["cp_id"], _Wire(self))
        await self.accept(subprotocol="ocpp1.6")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            await self.cp.route_message(text_data)


application = URLRouter([re_path(r"^ocpp/(?P<cp_id>[^/]+)$", BareConsumer.as_asgi())])
