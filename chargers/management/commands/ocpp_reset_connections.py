"""Mark every charger offline; the run command calls it before the web server starts.

After a crash or restart no consumer holds any websocket, so the flags left in the
database are stale. With several web processes use the silent-charger sweep instead.
"""

from typing import Any

from django.core.management.base import BaseCommand

from chargers.services import chargers_reset_connections


class Command(BaseCommand):
    help = "Mark all chargers offline (run at web server start)."

    def handle(self, *args: Any, **options: Any) -> None:
        count = chargers_reset_connections()
        self.stdout.write(f"{count} charger(s) marked offline")
