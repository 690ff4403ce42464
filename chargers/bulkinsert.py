"""Plain INSERTs and per-row UPDATEs for the hot path's log rows, samples and charger rows.

`bulk_create` compiles every value of every row through the field machinery; for the
OCPP write batches (thousands of rows a second, each a dozen plain columns) that
compiling was most of the database thread's time. Here only the columns that need an
adapter (date-times, JSON) go through their field; every other value is passed as is:
one prepared statement run for every row on SQLite, through COPY on PostgreSQL.
No ids come back (callers that need them read the rows back, or the table's maximum id).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.utils import timezone


def insert_new(model: type[models.Model], rows: Sequence[Mapping[str, Any]], *,
               ignore_conflicts: bool = False) -> None:
    """INSERT new rows of `model`, each given as the values of a few fields (by attname, the same
    fields in every row); every other column gets what a new instance would store: the field's
    default, or the batch's moment for `auto_now`/`auto_now_add`. No ids are set (read the rows
    back by what identifies them, or use `insert_new_returning`). With `ignore_conflicts`, a row
    a unique constraint already holds is skipped (`ON CONFLICT DO NOTHING`, as
    `bulk_create(ignore_conflicts=True)`).

    What `bulk_create` did for a new fleet's rows (chargers, connectors, limit rows): an instance
    built per row through every field's `__init__` machinery, then every value of every row
    compiled and, on PostgreSQL, quoted in Python: 12–14 % of a web process's time while 2,000
    new chargers connected (py-spy). Here only the given values are prepared per row; the
    defaults are prepared once per batch (a default computed per instance, a callable, is
    computed per row).
    """
    if not rows:
        return
    new = _NewRows(model, rows)
    if not ignore_conflicts:
        insert_rows(model, new.columns, new.values)
        return
    if connection.vendor == "postgresql":
        _insert_unnest(new, "ON CONFLICT DO NOTHING")
        return
    with connection.cursor() as cursor:  # a C loop over one prepared statement; SQLite has it since 3.24
        cursor.executemany(new.single_row_insert() + " ON CONFLICT DO NOTHING", new.values)


def insert_new_returning(model: type[models.Model], rows: Sequence[Mapping[str, Any]],
                         returning: Sequence[str]) -> list[tuple[Any, ...]]:
    """`insert_new`, giving back the `returning` columns of each new row (e.g. its primary key and
    what tells the rows apart), in no promised order: match them by those columns.

    Why: a batch of StartTransactions inserted its sessions with `bulk_create` for their ids, whose
    per-field compiling of every value was 3 % of a web process's CPU while 5,000 chargers
    connected on PostgreSQL (py-spy). On PostgreSQL it is one INSERT … SELECT FROM unnest(…)
    RETURNING. On SQLite one prepared single-row INSERT run for every row (executemany), then the
    rows read back by rowid: the last one this connection inserted and the ones just before it,
    which are this batch's, as SQLite lets one writer at a time insert and numbers its rows in
    order (every SQLite version; RETURNING needs 3.35, and `bulk_create`'s multi-row statement is
    a new text, kept in the statement cache, for every batch size).
    """
    if not rows:
        return []
    new = _NewRows(model, rows)
    quote = connection.ops.quote_name
    column_of = {name: str(field.column) for field in model._meta.concrete_fields
                 for name in (field.name, field.attname)} | {"pk": str(model._meta.pk.column)}
    wanted = ", ".join(quote(column_of[name]) for name in returning)
    if connection.vendor == "postgresql":
        return _insert_unnest(new, f"RETURNING {wanted}")
    if connection.vendor != "sqlite":
        raise NotImplementedError(f"insert_new_returning on {connection.vendor}")
    rowid = quote(column_of["pk"])
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:  # the write lock held throughout
        cursor.executemany(new.single_row_insert(), new.values)
        cursor.execute(f"SELECT {wanted} FROM {new.table} WHERE {rowid} > last_insert_rowid() - %s "  # noqa: S608
                       f"AND {rowid} <= last_insert_rowid()", [len(new.values)])
        return [tuple(row) for row in cursor.fetchall()]


class _NewRows:
    """New rows of a model prepared for the database: the values given per row, through their
    fields, and every other column's default, prepared once for the batch."""

    def __init__(self, model: type[models.Model], rows: Sequence[Mapping[str, Any]]) -> None:
        fields = [field for field in model._meta.concrete_fields if not field.primary_key]
        given = set(rows[0])
        unknown = given - {field.attname for field in fields}
        if unknown:
            raise ValueError(f"{model.__name__} has no column field {sorted(unknown)}")
        now = timezone.now()
        # The thread's connection itself, not the `connection` proxy (an asgiref Local lookup at
        # each of its attribute accesses, which a field's preparation makes per value).
        database = connections[DEFAULT_DB_ALIAS]
        self.per_row: list[models.Field[Any, Any]] = []
        self.constants: list[tuple[models.Field[Any, Any], Any]] = []  # (field, its value for every row)
        for field in fields:
            if field.attname in given or (field.has_default() and callable(field.default)):
                self.per_row.append(field)
            elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                self.constants.append((field, field.get_db_prep_save(now, database)))
            else:
                self.constants.append((field, field.get_db_prep_save(field.get_default(), database)))
        self.columns = [str(field.column) for field in (*self.per_row, *(field for field, _ in self.constants))]
        tail = tuple(value for _, value in self.constants)
        self.values = [
            tuple(field.get_db_prep_save(row[field.attname] if field.attname in given else field.get_default(),
                                         database) for field in self.per_row) + tail
            for row in rows
        ]
        self.table = connection.ops.quote_name(model._meta.db_table)
        self.column_list = ", ".join(connection.ops.quote_name(column) for column in self.columns)

    def single_row_insert(self) -> str:
        placeholders = ", ".join(["%s"] * len(self.columns))
        return f"INSERT INTO {self.table} ({self.column_list}) VALUES ({placeholders})"  # noqa: S608 - our names


def _insert_unnest(new: _NewRows, tail: str) -> list[tuple[Any, ...]]:
    """PostgreSQL: one INSERT … SELECT FROM unnest(one array per varying column), the constant
    columns given once, then `tail` (ON CONFLICT DO NOTHING, a RETURNING). `executemany` would be
    one statement per row for the server to parse and plan (measured: a 1,000-charger connect
    took 10–40 % longer than with bulk_create), and COPY can neither skip a conflicting row nor
    return one. What `tail` makes the statement return comes back."""
    aliases = [f"c{index}" for index in range(len(new.per_row))]
    selected = [f"u.{alias}" for alias in aliases] + [
        f"%s::{_unbounded_type(field)}" for field, _ in new.constants]
    arrays = ", ".join(f"%s::{_unbounded_type(field)}[]" for field in new.per_row)
    sql = (f"INSERT INTO {new.table} ({new.column_list}) SELECT {', '.join(selected)} "  # noqa: S608 - our names
           f"FROM unnest({arrays}) AS u({', '.join(aliases)}) {tail}")
    columns = [[row[index] for row in new.values] for index in range(len(new.per_row))]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*(value for _, value in new.constants), *columns])
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


def insert_rows(model: type[models.Model], columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """INSERT plain `rows` (values in `columns` order); aware date-times are adapted here,
    once per distinct value, every other value must already be what the database takes."""
    if not rows:
        return
    rows = _adapted(rows)
    table = connection.ops.quote_name(model._meta.db_table)
    column_list = ", ".join(connection.ops.quote_name(column) for column in columns)
    if connection.vendor == "postgresql":
        # COPY: psycopg parses a statement of thousands of %s placeholders in Python, uncached
        # (it was a fifth of a Daphne process's time in a 5,000-charger cut, holding the GIL
        # the event loop needed); COPY streams the rows with no statement to parse.
        with connection.cursor() as cursor, cursor.cursor.copy(
                f"COPY {table} ({column_list}) FROM STDIN") as copy:  # noqa: S608 - our own names
            for row in rows:
                copy.write_row(row)
        return
    placeholders = ", ".join(["%s"] * len(columns))
    # One single-row statement run for every row (executemany: a C loop over one prepared
    # statement), not multi-row VALUES lists: those were a new statement text for every batch
    # size, each parsed again and kept in the connection's statement cache (128 of them, up
    # to a thousand rows' worth of bytecode each: 3 MB of a process's memory at 125 chargers),
    # and they were slower per row (7.8 µs against 3.3–5.0 µs in a plain sqlite3 loop).
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({column_list}) VALUES ({placeholders})", rows)  # noqa: S608


def update_rows(model: type[models.Model], columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                unless_newer: str | None = None) -> None:
    """UPDATE one row per item of `rows`: `(primary key, *values in columns order)`, values as
    `insert_rows` takes them. One statement run for every row on SQLite (executemany: a C loop
    over one prepared statement), one statement over arrays on PostgreSQL, not an ORM UPDATE
    compiled per row: a storm's batch of 500 connections was 500 compilations.
    Rows are written in the given order (a key given twice ends with its last values).

    With `unless_newer` (one of `columns`, a time), a row whose stored value of that column is
    newer than the one given is left as it is, decided by the UPDATE itself: what another
    process wrote since the caller read the row is not overwritten with something older.
    """
    if not rows:
        return
    table = connection.ops.quote_name(model._meta.db_table)
    key = connection.ops.quote_name(str(model._meta.pk.column))
    if connection.vendor == "postgresql":
        _update_unnest(model, table, key, columns, rows, unless_newer)
        return
    assignments = ", ".join(f"{connection.ops.quote_name(column)} = %s" for column in columns)
    condition, values = f"{key} = %s", [(*row[1:], row[0]) for row in _adapted(rows)]
    if unless_newer is not None:
        position = list(columns).index(unless_newer)
        guarded = connection.ops.quote_name(unless_newer)
        condition += f" AND ({guarded} IS NULL OR {guarded} <= %s)"
        values = [(*row, row[position]) for row in values]
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {table} SET {assignments} WHERE {condition}", values)  # noqa: S608 - our names


def _update_unnest(model: type[models.Model], table: str, key: str, columns: Sequence[str],
                   rows: Sequence[Sequence[Any]], unless_newer: str | None) -> None:
    """PostgreSQL: one UPDATE … FROM unnest(the keys, one array per column). `executemany` sent
    one statement per row, each parsed and planned by the server. An UPDATE … FROM writes a row
    once, with any of its matches, so a key given twice is settled here first, as writing the
    rows in order would: its last values, or under `unless_newer` its newest."""
    guard = list(columns).index(unless_newer) if unless_newer is not None else None  # its index in `columns`
    last: dict[Any, Sequence[Any]] = {}
    for row in rows:
        earlier = last.get(row[0])
        if guard is None or earlier is None or not _newer(earlier[1 + guard], row[1 + guard]):
            last[row[0]] = row
    fields = {field.column: field for field in model._meta.concrete_fields}
    quote = connection.ops.quote_name
    aliases = [f"c{index}" for index in range(len(columns))]
    assignments = ", ".join(f"{quote(column)} = u.{alias}" for column, alias in zip(columns, aliases, strict=True))
    arrays = ", ".join(f"%s::{_unbounded_type(fields[column])}[]"
                       for column in (str(model._meta.pk.column), *columns))
    sql = (f"UPDATE {table} SET {assignments} FROM unnest({arrays}) AS u(k, {', '.join(aliases)}) "  # noqa: S608
           f"WHERE {table}.{key} = u.k")
    if guard is not None:
        guarded = f"{table}.{quote(columns[guard])}"
        sql += f" AND ({guarded} IS NULL OR {guarded} <= u.{aliases[guard]})"
    adapted = _adapted(list(last.values()))
    with connection.cursor() as cursor:
        cursor.execute(sql, [[row[index] for row in adapted] for index in range(len(columns) + 1)])


def _newer(value: Any, than: Any) -> bool:
    """Whether a time written first stays when `than` comes after it under `unless_newer`: only
    when it is newer (no time is older than any time, as in the SQL condition)."""
    return value is not None and (than is None or value > than)


_unbounded_types: dict[tuple[str, models.Field[Any, Any]], str] = {}


def _unbounded_type(field: models.Field[Any, Any]) -> str:
    """The column's type for casting a parameter to it, without a length: an explicit cast to
    `varchar(n)` cuts an overlong text silently, where storing it (an assignment) refuses it, as
    a plain INSERT or UPDATE does. Worked out once per field and database: asked for every
    column of every batch, it was 0.8 % of a web process's CPU in a 5,000-charger connect."""
    key = (connection.vendor, field)
    known = _unbounded_types.get(key)
    if known is None:
        known = _unbounded_types[key] = re.sub(
            r"^(varchar|character varying)\(\d+\)$", r"\1", str(field.cast_db_type(connection)))
    return known


def _adapted(rows: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
    """`rows` with their aware date-times adapted for the database, once per distinct value.
    PostgreSQL's driver takes date-times as they are (its backend's adapter returns them
    unchanged): the rows are not copied value by value for nothing."""
    if connection.vendor == "postgresql":
        return rows
    moments: dict[dt.datetime, Any] = {}
    # Bound once: `connection` is a proxy that looks the thread's connection up in an asgiref
    # Local at every attribute access (a tenth of a Daphne process's CPU when done per row).
    adapt = connection.ops.adapt_datetimefield_value

    def prepared(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            if value not in moments:
                moments[value] = adapt(value)
            return moments[value]
        return value

    return [tuple(prepared(value) for value in row) for row in rows]
