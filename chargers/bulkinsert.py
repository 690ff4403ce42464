"""One INSERT … executemany for unsaved model instances: the hot path's log rows and samples.

`bulk_create` compiles every value of every row through the field machinery; for the
OCPP write batches (thousands of rows a second, each a dozen plain columns) that
compiling was most of the database thread's time. Here only the columns that need an
adapter (date-times, JSON) go through their field; every other value is passed as is.
No ids are set on the instances (callers that need them read the table's maximum id).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, models


def bulk_insert(model: type[models.Model], instances: Sequence[models.Model]) -> None:
    if not instances:
        return
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    adapted = [isinstance(field, models.DateTimeField | models.JSONField) for field in fields]
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    table = connection.ops.quote_name(model._meta.db_table)
    rows = [
        tuple(field.get_db_prep_save(getattr(instance, field.attname), connection) if adapt
              else getattr(instance, field.attname) for field, adapt in zip(fields, adapted, strict=True))
        for instance in instances
    ]
    # Many rows per statement rather than executemany: the driver releases the GIL for
    # every statement it steps, and getting it back from a busy event loop thread costs up
    # to the switch interval (5 ms) each time.
    per_statement = max(1, connection.ops.bulk_batch_size(fields, instances))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            values = ", ".join([f"({placeholders})"] * len(chunk))
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {values}",  # noqa: S608
                           [value for row in chunk for value in row])
