"""The central system's side of one charger, without a websocket: what unit tests of
`CentralSystemChargePoint` drive (its frames in by `route_message`, its frames out recorded)."""

from __future__ import annotations

import json
from typing import Any

from chargers.protocol import CentralSystemChargePoint


class RecordingWire:
    """What the charge point writes to: every frame it sends, decoded, in order."""

    def __init__(self) -> None:
        self.sent: list[list[Any]] = []

    async def send(self, message: str) -> None:
        self.sent.append(json.loads(message))


async def _no_boot_steps() -> None:
    return None


def central_point(charge_point_id: str, wire: RecordingWire, *, response_timeout: int = 2) -> CentralSystemChargePoint:
    return CentralSystemChargePoint(charge_point_id, wire, charger_pk=1, response_timeout=response_timeout,
                                    on_boot_accepted=_no_boot_steps)
