"""Django's PostgreSQL backend, with psycopg's C parser for `timestamptz` values.

Django loads every `timestamptz` through a Python subclass of psycopg's pure-Python loader
(to set the connection's time zone on the result), whatever psycopg implementation is
installed: ~4 µs a value. The control loop reads tens of thousands of them a tick (recent meter
samples, the live state of every connector), the dashboards as many. When the session time zone
is UTC (`USE_TZ` with no database `TIME_ZONE`, this project's setting), psycopg's C loader
returns exactly what Django's does (aware, `datetime.timezone.utc`) in a third of the time:
it is registered here, behind the class attribute Django checks when it opens a cursor.

It also spares a connection in steady use the health check's round trip (see
`DatabaseWrapper.close_if_health_check_failed`).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from django.db.backends.postgresql import base
from django.db.backends.postgresql.psycopg_any import BaseTzLoader

try:
    from psycopg_binary._psycopg import TimestamptzLoader as CTimestamptzLoader  # type: ignore[attr-defined]
except ImportError:  # the pure-Python psycopg: keep Django's loader
    CTimestamptzLoader = None


class UtcTimestamptzLoader(BaseTzLoader):
    """Django's loader as `create_cursor` sees it (`timezone` is UTC), psycopg's C `load`."""

    timezone = dt.UTC

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        self.load = CTimestamptzLoader(oid, context).load


# A connection the server answered this recently is used without a health check first.
HEALTH_CHECK_AFTER_S = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    # When the server last answered this connection (monotonic): connected, committed, or
    # passed a health check. None: not known.
    answered_at: float | None = None

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        if CTimestamptzLoader is not None and self.timezone is dt.UTC:
            connection.adapters.register_loader("timestamptz", UtcTimestamptzLoader)
        self.answered_at = time.monotonic()
        return connection

    def commit(self) -> None:
        super().commit()  # an atomic block's end comes here too
        self.answered_at = time.monotonic()

    def is_usable(self) -> bool:
        usable = bool(super().is_usable())
        if usable:
            self.answered_at = time.monotonic()
        return usable

    def close_if_health_check_failed(self) -> None:
        """Skip the check (a `SELECT 1` round trip) when the server answered this connection
        less than HEALTH_CHECK_AFTER_S ago.

        Channels ends every database call by marking its connection for a check before the
        next use, so with health checks on, each write batch and each boot step's query paid
        one: 11–12 % of a web process's database thread in a 1,000-charger boot and under
        1,000 MeterValues/s (py-spy), and as many statements on the server. A connection in
        steady use has just proved itself; one the server dropped meanwhile fails its next
        statement, which the callers recover from as from a drop after the check (the write
        buffer writes a failed batch again item by item, on a new connection). A connection
        idle for longer is checked as before.
        """
        if (self.connection is not None and self.answered_at is not None
                and time.monotonic() - self.answered_at < HEALTH_CHECK_AFTER_S):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
