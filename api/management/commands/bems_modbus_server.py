"""Run the BEMS Modbus TCP server (off unless BEMS_MODBUS_ENABLED=true; see README, Modbus)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from api.modbus_server import ServerOptions, serve


class Command(BaseCommand):
    help = "Serve the site's register map to BMS/PLCs over Modbus TCP."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="Run even when BEMS_MODBUS_ENABLED is false.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.BEMS_MODBUS_ENABLED and not options["force"]:
            self.stdout.write("Modbus TCP server disabled (set BEMS_MODBUS_ENABLED=true).")
            return
        server_options = ServerOptions(
            host=settings.BEMS_MODBUS_BIND, port=settings.BEMS_MODBUS_PORT, unit_id=settings.BEMS_MODBUS_UNIT_ID,
            writable=settings.BEMS_MODBUS_WRITABLE, allowed_clients=list(settings.BEMS_MODBUS_ALLOWED_CLIENTS),
        )
        asyncio.run(self._run(server_options))

    async def _run(self, server_options: ServerOptions) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        mode = "read-write" if server_options.writable else "read-only"
        self.stdout.write(f"Modbus TCP server on {server_options.host}:{server_options.port} "
                          f"(unit {server_options.unit_id}, {mode})")
        await serve(server_options, stop=stop)
