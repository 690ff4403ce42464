"""`field__among=values`: `field IN (values)`, sent as one parameter whatever the count.

The loop and the answer recorder filter on thousands of primary keys at once (a limit cut on
5,000 chargers). With `__in`, each key is a placeholder: Django compiles every one, and psycopg
splits the statement's thousands of placeholders in Python, uncached (a fifth of a 5,000-charger
cut's tick went there). `= ANY(%s)` with a list is one placeholder whatever the count.
SQLite has no arrays but reads a JSON array as a table (`json_each`): one statement text for
every count, where `IN (%s, %s, …)` is a new text per count — each parsed again and kept in
the connection's statement cache (a write batch touches 1 to 500 chargers: the variants were
most of the 1.4 MB that cache held in a web process at 125 chargers). Values that JSON cannot
carry as they are (not int or str) get the plain `IN (…)`; callers keep chunking to its cap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, ForeignObject, Lookup
from django.db.models.sql.compiler import SQLCompiler


@ForeignObject.register_lookup  # relations keep lookups of their own
@Field.register_lookup
class Among(Lookup):
    lookup_name = "among"

    def get_prep_lookup(self) -> list[Any]:
        if not isinstance(self.rhs, Iterable) or isinstance(self.rhs, str | bytes):
            raise TypeError(f"__among takes a collection of values, not {type(self.rhs).__name__}")
        field = self.lhs.output_field
        return [field.get_prep_value(value) for value in self.rhs]

    def as_sql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> tuple[str, tuple[Any, ...]]:
        lhs_sql, lhs_params = self.process_lhs(compiler, connection)
        field = self.lhs.output_field
        values = [field.get_db_prep_value(value, connection, prepared=True) for value in self.rhs]
        if not values:
            raise EmptyResultSet  # what `__in=[]` does: no row matches
        if connection.vendor == "postgresql":
            return f"{lhs_sql} = ANY(%s)", (*lhs_params, values)
        if connection.vendor == "sqlite" and {type(value) for value in values} in _JSON_EXACT:
            # One kind, the column's (its field prepared them): `IN (SELECT …)` compares with the
            # subquery column's affinity, where a mixed list would not match as `IN (%s, …)` does.
            return f"{lhs_sql} IN (SELECT value FROM json_each(%s))", (*lhs_params, json.dumps(values))  # noqa: S608
        return f"{lhs_sql} IN ({', '.join(['%s'] * len(values))})", (*lhs_params, *values)


# Lists a JSON array carries to SQLite unchanged: all int or all str (bool is not int here).
_JSON_EXACT = ({int}, {str})
