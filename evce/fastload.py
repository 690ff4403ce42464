"""Model instances from plain rows, for the control loop's reads of thousands of rows a tick.

Django builds each fetched instance through `Model.__init__`: every field visited, `pre_init`
and `post_init` sent. For the loop's 5,000 chargers, 5,000 sessions and 10,000 live states that
was a fifth of a tick's CPU. Here a row's values go straight into the instance's `__dict__`,
as `Model.from_db` would leave them: the instance behaves as one from `.only(*fields)` (a
field not loaded is read from the database on first access, as a deferred field is). The
models read this way have no `*_init` receivers and no field that needs `__init__`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from django.db import models
from django.db.models.base import ModelState

M = TypeVar("M", bound=models.Model)


def instances(queryset: models.QuerySet[M], fields: Sequence[str]) -> list[M]:
    """The rows of `queryset` with `fields` (names or attnames; the primary key is always read)."""
    model = queryset.model
    opts = model._meta
    attnames = list(dict.fromkeys([opts.pk.attname, *(_attname(opts.get_field(name)) for name in fields)]))
    database = queryset.db
    new = object.__new__
    built = []
    for row in queryset.values_list(*attnames):
        instance = new(model)
        instance.__dict__.update(zip(attnames, row, strict=True))
        state = ModelState()
        state.adding, state.db = False, database
        instance._state = state
        built.append(instance)
    return built


def _attname(field: object) -> str:
    if not isinstance(field, models.Field):
        raise TypeError(f"{field} is not a column of the model")
    return str(field.attname)
