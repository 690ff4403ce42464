"""The embedded database's write transactions queue on a file lock across connections
(evce/sqlite/base.py) instead of SQLite's sleeping retries."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connection, connections

from evce.sqlite.base import DatabaseWrapper


def _wrapper(path: Path, timeout_s: float = 20) -> DatabaseWrapper:
    settings_dict: dict[str, Any] = dict(connection.settings_dict)
    settings_dict.update(ENGINE="evce.sqlite", NAME=str(path),
                         OPTIONS={"timeout": timeout_s, "transaction_mode": "IMMEDIATE"})
    return DatabaseWrapper(settings_dict, alias=f"lock-test-{threading.get_ident()}")


def _begin(wrapper: DatabaseWrapper) -> None:
    """BEGIN IMMEDIATE as `transaction.atomic()` starts it on SQLite."""
    wrapper.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)


def _insert(wrapper: DatabaseWrapper, value: int) -> None:
    with wrapper.cursor() as cursor:
        cursor.execute("INSERT INTO t (v) VALUES (%s)", [value])


@pytest.fixture
def database(tmp_path: Path, django_db_blocker: Any) -> Any:
    """A WAL database file of one table; these tests open their own connections to it."""
    path = tmp_path / "lock.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (v INTEGER)")
    with django_db_blocker.unblock():
        yield path


def _other_writer(path: Path, value: int, timeout_s: float, events: list[tuple[str, float]]) -> threading.Thread:
    """A writer on its own thread and connection; records when it began and how it ended."""

    def run() -> None:
        other = _wrapper(path, timeout_s)
        try:
            _begin(other)  # BEGIN IMMEDIATE, after the file lock
            events.append(("began", time.monotonic()))
            _insert(other, value)
            other.commit()
            events.append(("committed", time.monotonic()))
        except OperationalError as error:
            events.append((f"error: {error}", time.monotonic()))
        finally:
            other.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_second_writer_waits_for_the_first_commit_then_goes_in(database):
    first = _wrapper(database)
    _begin(first)
    assert first._write_lock_held
    _insert(first, 1)
    events: list[tuple[str, float]] = []
    thread = _other_writer(database, 2, 20, events)
    time.sleep(0.3)
    assert events == []  # queued on the file lock while the first transaction is open
    released_at = time.monotonic()
    first.commit()
    first.set_autocommit(True)
    assert not first._write_lock_held
    thread.join(10)
    assert [name for name, _ in events] == ["began", "committed"]
    assert events[0][1] >= released_at
    with sqlite3.connect(database) as db:
        assert [v for (v,) in db.execute("SELECT v FROM t ORDER BY rowid")] == [1, 2]
    first.close()


def test_a_rollback_releases_the_lock_and_keeps_nothing(database):
    first = _wrapper(database)
    _begin(first)
    _insert(first, 1)
    first.rollback()
    first.set_autocommit(True)
    assert not first._write_lock_held
    events: list[tuple[str, float]] = []
    _other_writer(database, 2, 20, events).join(10)
    assert [name for name, _ in events] == ["began", "committed"]
    with sqlite3.connect(database) as db:
        assert [v for (v,) in db.execute("SELECT v FROM t")] == [2]
    first.close()


def test_a_writer_gives_up_after_the_timeout_with_database_locked_and_the_holder_keeps_its_work(database):
    first = _wrapper(database)
    _begin(first)
    _insert(first, 1)
    events: list[tuple[str, float]] = []
    _other_writer(database, 2, 0.3, events).join(10)
    assert len(events) == 1 and "database is locked" in events[0][0]
    first.commit()
    first.set_autocommit(True)
    with sqlite3.connect(database) as db:
        assert [v for (v,) in db.execute("SELECT v FROM t")] == [1]
    first.close()


def test_closing_a_connection_inside_a_transaction_releases_the_lock(database):
    first = _wrapper(database)
    _begin(first)
    _insert(first, 1)
    first.close()
    events: list[tuple[str, float]] = []
    _other_writer(database, 2, 20, events).join(10)
    assert [name for name, _ in events] == ["began", "committed"]


def test_the_project_uses_it_for_sqlite():
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL run")
    assert isinstance(connections["default"], DatabaseWrapper)


def test_a_write_statement_outside_a_transaction_queues_too_and_lets_go_after_it(database):
    first = _wrapper(database)
    _begin(first)
    _insert(first, 1)
    events: list[tuple[str, float]] = []

    def autocommit_write() -> None:
        other = _wrapper(database)
        try:
            _insert(other, 2)  # autocommit: takes the file lock for this statement only
            events.append(("written", time.monotonic()))
            assert not other._write_lock_held
            with other.cursor() as cursor:  # a read takes no lock
                cursor.execute("SELECT COUNT(*) FROM t")
                events.append((f"read {cursor.fetchone()[0]}", time.monotonic()))
        finally:
            other.close()

    thread = threading.Thread(target=autocommit_write)
    thread.start()
    time.sleep(0.3)
    assert events == []
    released_at = time.monotonic()
    first.commit()
    first.set_autocommit(True)
    thread.join(10)
    assert [name for name, _ in events] == ["written", "read 2"]
    assert events[0][1] >= released_at
    first.close()


@pytest.mark.django_db
def test_a_sqlite_connection_keeps_a_small_statement_cache():
    """8 prepared statements per connection, not Python's 128 (evce/settings.py: ~25 KB each; at
    128, 0.9 MB of a web process at 125 chargers went to statements only a boot uses)."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    assert connection.get_connection_params()["cached_statements"] == 8
