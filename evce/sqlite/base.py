"""Django's SQLite backend, with write transactions queued across processes by a file lock.

Several processes write the embedded database at once (each Daphne process's write buffer and
answer recorder, the Celery worker, beat). SQLite lets one write transaction in at a time and
makes the others poll: its busy handler sleeps 1, 2, 5 … up to 100 ms between attempts, so a
writer that arrives while another commits waits well past the moment the lock is free — with
two Daphne processes that polling, not the work, set the MeterValues latency.

Here every `BEGIN IMMEDIATE` (Django's `transaction.atomic()` with the project's
`transaction_mode`) first takes an exclusive `flock` on `<database>-writelock`, polled every
0.5 ms at first and at most every 5 ms, so the next writer is in within a few milliseconds of
the commit. The lock is released at COMMIT, ROLLBACK or close. A write statement outside a
transaction (an autocommit INSERT/UPDATE/DELETE: the OCPP connect and boot updates) holds it
for that statement. A waiter gives up the file lock after the database's
`timeout` and goes on to SQLite's own wait, so a stuck holder fails a writer as before (with
"database is locked") instead of hanging it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from typing import Any

from django.db.backends.sqlite3 import base


def _lock_path(name: object) -> str | None:
    """The lock file beside a file database; None for an in-memory one."""
    text = str(name)
    if not text or text == ":memory:" or text.startswith("file:") or "mode=memory" in text:
        return None
    return text + "-writelock"


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")


class LockingCursorWrapper(base.SQLiteCursorWrapper):
    """Takes the write lock around a write statement run in autocommit mode."""

    database: DatabaseWrapper

    def execute(self, query: str, params: Any = None) -> Any:
        with self._write_locked(query):
            return super().execute(query, params)

    def executemany(self, query: str, param_list: Any) -> Any:
        with self._write_locked(query):
            return super().executemany(query, param_list)

    @contextlib.contextmanager
    def _write_locked(self, query: str) -> Iterator[None]:
        if not self._autocommit_write(query):
            yield
            return
        self.database._take_write_lock()
        try:
            yield
        finally:
            self.database._release_write_lock()

    def _autocommit_write(self, query: str) -> bool:
        database = self.database
        return (database.autocommit and not database._write_lock_held and not database.in_atomic_block
                and query.lstrip()[:6].upper() in _WRITES)


class DatabaseWrapper(base.DatabaseWrapper):
    def create_cursor(self, name: Any = None) -> Any:
        cursor = self.connection.cursor(factory=LockingCursorWrapper)
        cursor.database = self
        return cursor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_lock_fd: int | None = None  # the lock file, open while this connection lives
        self._write_lock_held = False

    def _start_transaction_under_autocommit(self) -> None:
        self._take_write_lock()
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private, not in django-stubs
        except BaseException:
            self._release_write_lock()
            raise

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]
        finally:
            self._release_write_lock()

    def _rollback(self) -> None:
        try:
            super()._rollback()  # type: ignore[misc]
        finally:
            self._release_write_lock()

    def _close(self) -> None:
        try:
            super()._close()  # type: ignore[misc]
        finally:
            self._release_write_lock()
            if self._write_lock_fd is not None:
                os.close(self._write_lock_fd)
                self._write_lock_fd = None

    def _take_write_lock(self) -> None:
        path = _lock_path(self.settings_dict["NAME"])
        if path is None or self._write_lock_held:
            return
        if self._write_lock_fd is None:
            self._write_lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not _wait_for_lock(self._write_lock_fd, float(self.settings_dict["OPTIONS"].get("timeout", 5))):
                return  # SQLite's own wait decides
        self._write_lock_held = True

    def _release_write_lock(self) -> None:
        if self._write_lock_held and self._write_lock_fd is not None:
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_UN)
        self._write_lock_held = False


def _wait_for_lock(fd: int, timeout_s: float) -> bool:
    """Poll the lock up to `timeout_s` (a thread's blocking flock cannot be interrupted by a
    timer): every 0.5 ms at first, since most transactions last a few milliseconds, then up to
    every 5 ms."""
    deadline = time.monotonic() + timeout_s
    pause_s = 0.0005
    while time.monotonic() < deadline:
        time.sleep(pause_s)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pause_s = min(pause_s * 1.5, 0.005)
    return False
