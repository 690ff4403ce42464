"""Array parameters as one literal (evce/pgarrays.py): the same arrays as psycopg's dumper writes.

`array_literal` is pure and tested everywhere; what PostgreSQL reads from it, against psycopg's
own dumper, is tested on PostgreSQL (the suite's run against it)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest
from django.db import connection, models
from hypothesis import given, settings
from hypothesis import strategies as st

from chargers.models import Charger
from evce.pgarrays import ArrayLiteralDumper, array_literal

UTC = dt.UTC
MOMENT = dt.datetime(2026, 12, 5, 15, 44, 34, 471653, tzinfo=UTC)


class Status(models.TextChoices):
    AVAILABLE = "Available"


def test_it_writes_each_kind_the_hot_path_has():
    assert array_literal([1, None, -5, 2**40]) == "{1,NULL,-5,1099511627776}"
    assert array_literal([True, False, None]) == "{t,f,NULL}"
    assert array_literal([1.5, float("inf"), float("-inf"), float("nan")]) == "{1.5,Infinity,-Infinity,NaN}"
    assert array_literal([MOMENT, dt.date(2026, 1, 2)]) == '{"2026-12-05T15:44:34.471653+00:00","2026-01-02"}'
    assert array_literal([]) == "{}"


def test_every_text_is_quoted_and_its_quotes_and_backslashes_escaped():
    assert array_literal(["a", "", "NULL", "{,}"]) == '{"a","","NULL","{,}"}'
    assert array_literal(['x"y', "b\\c"]) == '{"x\\"y","b\\\\c"}'
    assert array_literal([Status.AVAILABLE]) == '{"Available"}'  # a text choice: its text


def test_a_moment_is_written_as_its_own_offset_says_even_when_equal_to_another():
    elsewhere = MOMENT.astimezone(dt.timezone(dt.timedelta(hours=5)))
    assert MOMENT == elsewhere
    assert array_literal([MOMENT, elsewhere, MOMENT]) == (
        '{"2026-12-05T15:44:34.471653+00:00","2026-12-05T20:44:34.471653+05:00","2026-12-05T15:44:34.471653+00:00"}')


@pytest.mark.parametrize("values", [
    [[1, 2], [3, 4]],  # nested
    [decimal.Decimal("1.5")],
    [uuid.uuid4()],
    ["a\x00b"],  # PostgreSQL stores no NUL: psycopg's dumper refuses it
    [b"bytes"],
    [dt.time(12, 0)],
])
def test_what_it_does_not_write_is_left_to_psycopg(values):
    assert array_literal(values) is None


postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL arrays")

# (values, the cast PostgreSQL reads them with)
CASES = [
    ([1, 2, None, -5, 2**40], "bigint[]"),
    (["a", "", "NULL", 'x"y', "b\\c", "{,}", " sp ", "é€", None, "tab\there", "new\nline"], "text[]"),
    ([True, False, None], "boolean[]"),
    ([MOMENT, MOMENT.astimezone(dt.timezone(dt.timedelta(hours=5))), None], "timestamptz[]"),
    ([dt.date(2026, 1, 2)], "date[]"),
    ([1.5, float("inf"), float("-inf"), 1e-5, None], "float8[]"),
    ([], "bigint[]"),
    ([None, None], "text[]"),
    ([decimal.Decimal("2.50")], "numeric[]"),  # psycopg's own path
]


def _read_back(values: list[object], cast: str, *, literal: bool) -> object:
    adapters = connection.connection.adapters
    if not literal:
        from psycopg.types.array import ListDumper

        adapters.register_dumper(list, ListDumper)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT %s::{cast}", [values])
            return cursor.fetchone()[0]
    finally:
        adapters.register_dumper(list, ArrayLiteralDumper)


@postgres_only
@pytest.mark.django_db
def test_django_connections_dump_lists_with_it():
    from psycopg.adapt import PyFormat

    connection.ensure_connection()
    assert connection.connection.adapters.get_dumper(list, PyFormat.TEXT) is ArrayLiteralDumper


@postgres_only
@pytest.mark.django_db
@pytest.mark.parametrize(("values", "cast"), CASES)
def test_postgresql_reads_what_psycopgs_dumper_would_have_sent(values, cast):
    connection.ensure_connection()
    assert _read_back(values, cast, literal=True) == _read_back(values, cast, literal=False)


@postgres_only
@pytest.mark.django_db
@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")))))
def test_any_text_reads_back_as_it_was(values):
    connection.ensure_connection()
    assert _read_back(values, "text[]", literal=True) == values


@postgres_only
@pytest.mark.django_db
def test_a_nul_in_a_text_is_refused_as_psycopg_refuses_it():
    from django.db import DataError

    connection.ensure_connection()
    with pytest.raises(DataError, match="NUL"), connection.cursor() as cursor:
        cursor.execute("SELECT %s::text[]", [["a\x00b"]])


@pytest.mark.django_db
def test_among_and_unnest_statements_find_and_write_the_rows():
    """The hot path's statements with their arrays: a filter, an UPDATE over arrays, Django's
    bulk_create (UNNEST on PostgreSQL)."""
    from chargers.bulkinsert import update_rows

    Charger.objects.bulk_create([Charger(charge_point_id=f'CP-"{n}\\') for n in range(3)])
    chargers = list(Charger.objects.filter(charge_point_id__among=[f'CP-"{n}\\' for n in range(3)]).order_by("pk"))
    assert len(chargers) == 3
    update_rows(Charger, ["vendor", "last_seen"], [(charger.pk, f"V,{{{n}}}", MOMENT)
                                                   for n, charger in enumerate(chargers)])
    assert sorted(Charger.objects.values_list("vendor", "last_seen")) == [
        (f"V,{{{n}}}", MOMENT) for n in range(3)]
