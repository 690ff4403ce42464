"""Send any OCPP 1.6 central-system request to a connected charger and print the answer."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from redis.exceptions import RedisError

from chargers.commands import CallFailed, LayerUnavailable, send_call


class Command(BaseCommand):
    help = (
        "Send an OCPP call to a connected charger, e.g. "
        "`manage.py ocpp_call CP-1 Reset '{\"type\": \"Soft\"}'`. Prints the charger's answer as JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("charge_point_id")
        parser.add_argument("action", help="OCPP 1.6 action, e.g. Reset, GetConfiguration")
        parser.add_argument("payload", nargs="?", default="{}", help="JSON object (default {})")
        parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for the answer")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            payload = json.loads(options["payload"])
        except ValueError as error:
            raise CommandError(f"payload is not valid JSON: {error}") from None
        try:
            answer = send_call(options["charge_point_id"], options["action"], payload, timeout_s=options["timeout"])
        except (LayerUnavailable, RedisError, OSError) as error:
            # The call travels through Redis to the web process holding the websocket.
            raise CommandError(
                f"cannot reach Redis at {settings.REDIS_URL} ({type(error).__name__}): is EVCE running (bin/run)? "
                "If it runs with another data directory or Redis, run this command with the same EVCE_DATA_DIR "
                "(its embedded Redis is then found) or REDIS_URL."
            ) from None
        except CallFailed as error:
            raise CommandError(f"{type(error).__name__}: {error}") from None
        self.stdout.write(json.dumps(answer, indent=2, sort_keys=True))
