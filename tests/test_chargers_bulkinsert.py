"""chargers.bulkinsert: new rows stored as `bulk_create` stores them, rows updated as one by one would."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import DataError, IntegrityError, connection, transaction

from badges.models import LocalListState
from chargers.bulkinsert import insert_new, insert_new_returning, update_rows
from chargers.models import Charger, Connector, RegistrationStatus
from loadmgmt.models import LimitPurpose, LimitState

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 5, 6, 0, tzinfo=dt.UTC)


def _stored(model, **lookup) -> dict[str, object]:
    """Every column of the row but its key and its automatic times, as stored."""
    row = model.objects.filter(**lookup).values().get()
    return {name: value for name, value in row.items() if name not in {"id", "created_at", "updated_at"}}


@pytest.mark.parametrize(("model", "given", "key"), [
    (Charger, {"charge_point_id": "CP-{n}", "registration_status": RegistrationStatus.ACCEPTED,
               "heartbeat_interval_s": 120}, "charge_point_id"),
    (LimitState, {"charger_id": None, "connector_id": 0, "purpose": LimitPurpose.TX_DEFAULT, "transaction_id": None,
                  "state_since": 12.5}, "charger_id"),
    (Connector, {"charger_id": None, "connector_id": 1, "status": "Preparing", "error_code": "NoError",
                 "status_at": NOW}, "charger_id"),
    (LocalListState, {"charger_id": None}, "charger_id"),
])
def test_a_row_is_stored_as_bulk_create_stores_it(model, given, key):
    owners = [Charger.objects.create(charge_point_id=f"OWNER-{n}") for n in range(2)]

    def values(n: int) -> dict[str, object]:
        filled = {name: (value.format(n=n) if isinstance(value, str) and "{n}" in value else value)
                  for name, value in given.items()}
        if "charger_id" in filled:
            filled["charger_id"] = owners[n].pk
        return filled

    model.objects.bulk_create([model(**values(0))])
    before = dt.datetime.now(dt.UTC)
    insert_new(model, [values(1)])
    after = dt.datetime.now(dt.UTC)

    ours, djangos = values(1)[key], values(0)[key]
    assert {**_stored(model, **{key: ours}), key: None} == {**_stored(model, **{key: djangos}), key: None}
    for name in ("created_at", "updated_at"):  # automatic times: the batch's moment
        if hasattr(model, name):
            assert before <= getattr(model.objects.get(**{key: ours}), name) <= after


def test_a_default_computed_per_instance_is_computed_per_row():
    owners = [Charger.objects.create(charge_point_id=f"CP-{n}") for n in range(2)]
    insert_new(LocalListState, [{"charger_id": owner.pk} for owner in owners])
    states = list(LocalListState.objects.order_by("charger_id"))
    assert [state.entries for state in states] == [{}, {}]
    states[0].entries["TAG"] = "Accepted"
    states[0].save()
    assert LocalListState.objects.get(pk=states[1].pk).entries == {}


def test_a_conflicting_row_is_skipped_with_ignore_conflicts_and_the_stored_one_is_kept():
    owners = [Charger.objects.create(charge_point_id=f"CP-{n}") for n in range(3)]
    LimitState.objects.create(charger=owners[1], connector_id=0, purpose=LimitPurpose.TX_DEFAULT, wanted_a=16.0)
    insert_new(LimitState, [{"charger_id": owner.pk, "connector_id": 0, "purpose": LimitPurpose.TX_DEFAULT}
                            for owner in owners], ignore_conflicts=True)
    assert sorted(LimitState.objects.values_list("charger_id", "wanted_a")) == [
        (owners[0].pk, None), (owners[1].pk, 16.0), (owners[2].pk, None)]


def test_a_conflicting_row_fails_the_whole_insert_without_ignore_conflicts():
    Charger.objects.create(charge_point_id="CP-TAKEN")
    with pytest.raises(Exception) as failed, transaction.atomic():  # noqa: PT011, PT012 - the driver's own class
        insert_new(Charger, [{"charge_point_id": "CP-NEW"}, {"charge_point_id": "CP-TAKEN"}])
    assert isinstance(failed.value, IntegrityError) or "unique" in str(failed.value).lower()
    assert list(Charger.objects.values_list("charge_point_id", flat=True)) == ["CP-TAKEN"]


def test_an_unknown_field_is_refused_before_anything_is_written():
    with pytest.raises(ValueError, match="no column field"):
        insert_new(Charger, [{"charge_point_id": "CP-1", "nickname": "x"}])
    assert not Charger.objects.exists()


def test_rows_are_updated_by_key_and_a_key_given_twice_ends_with_its_last_values():
    chargers = [Charger.objects.create(charge_point_id=f"CP-{n}") for n in range(3)]
    update_rows(Charger, ("connected", "channel_name", "last_seen"), [
        (chargers[0].pk, True, "first", NOW),
        (chargers[1].pk, True, "b", NOW + dt.timedelta(seconds=1)),
        (chargers[0].pk, False, "again", NOW + dt.timedelta(seconds=2)),
    ])
    assert sorted(Charger.objects.values_list("charge_point_id", "connected", "channel_name", "last_seen")) == [
        ("CP-0", False, "again", NOW + dt.timedelta(seconds=2)),
        ("CP-1", True, "b", NOW + dt.timedelta(seconds=1)),
        ("CP-2", False, "", None),  # not given: untouched
    ]


def test_unless_newer_leaves_a_row_whose_stored_time_is_newer():
    charger = Charger.objects.create(charge_point_id="CP-1")
    stored = {n: Connector.objects.create(charger=charger, connector_id=n, status="Preparing",
                                          status_at=NOW if n != 3 else None) for n in (1, 2, 3)}
    update_rows(Connector, ("status", "status_at"), [
        (stored[1].pk, "Charging", NOW - dt.timedelta(seconds=1)),  # older than stored: kept as stored
        (stored[2].pk, "Charging", NOW),  # as new as stored: written
        (stored[3].pk, "Charging", NOW - dt.timedelta(days=1)),  # nothing stored: written
    ], unless_newer="status_at")
    assert sorted(Connector.objects.values_list("connector_id", "status", "status_at")) == [
        (1, "Preparing", NOW), (2, "Charging", NOW), (3, "Charging", NOW - dt.timedelta(days=1))]


def test_unless_newer_with_a_key_given_twice_ends_as_writing_the_rows_in_order_would():
    """PostgreSQL writes all rows in one UPDATE … FROM, which takes one match per row: the newest
    of a key's rows must be the one it takes, as SQLite's row-by-row statements leave it."""
    charger = Charger.objects.create(charge_point_id="CP-1")
    stored = {n: Connector.objects.create(charger=charger, connector_id=n, status="Available",
                                          status_at=NOW - dt.timedelta(seconds=10)) for n in (1, 2)}
    update_rows(Connector, ("status", "status_at"), [
        (stored[1].pk, "Charging", NOW),
        (stored[1].pk, "Finishing", NOW - dt.timedelta(seconds=5)),  # older than the row before it
        (stored[2].pk, "Charging", NOW - dt.timedelta(seconds=5)),
        (stored[2].pk, "Finishing", NOW - dt.timedelta(seconds=5)),  # as new: the later one wins
    ], unless_newer="status_at")
    assert sorted(Connector.objects.values_list("connector_id", "status", "status_at")) == [
        (1, "Charging", NOW), (2, "Finishing", NOW - dt.timedelta(seconds=5))]


def test_an_overlong_text_is_refused_as_a_plain_write_refuses_it_never_cut():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite stores texts whatever their length, as Django's own writes there")
    charger = Charger.objects.create(charge_point_id="CP-1")
    overlong = "x" * 201  # channel_name is varchar(200)
    with pytest.raises(DataError), transaction.atomic():
        update_rows(Charger, ("channel_name",), [(charger.pk, overlong)])
    with pytest.raises(DataError), transaction.atomic():
        insert_new(LimitState, [{"charger_id": charger.pk, "connector_id": 0, "purpose": "x" * 21}],
                   ignore_conflicts=True)
    assert Charger.objects.get().channel_name == "" and not LimitState.objects.exists()


def test_new_rows_come_back_with_their_keys_as_stored_and_only_this_inserts_rows():
    from transactions.models import Transaction, TransactionState

    charger = Charger.objects.create(charge_point_id="CP-RET")
    earlier = Transaction.objects.create(charger=charger, connector_id=9, id_tag="OLD", start_time=NOW)
    rows = [{"charger_id": charger.pk, "connector_id": n, "id_tag": f"TAG-{n}", "start_time": NOW,
             "meter_start_wh": 100 * n} for n in (1, 2, 3)]
    with transaction.atomic():
        returned = insert_new_returning(Transaction, rows, ("pk", "connector_id", "id_tag"))
    assert sorted(row[1:] for row in returned) == [(1, "TAG-1"), (2, "TAG-2"), (3, "TAG-3")]
    for pk, connector_id, _tag in returned:
        stored = Transaction.objects.get(pk=pk)
        assert pk != earlier.pk and stored.connector_id == connector_id
        assert stored.meter_start_wh == 100 * connector_id and stored.start_time == NOW
        assert stored.state == TransactionState.ACTIVE and stored.created_at is not None  # defaults as a new row
    assert insert_new_returning(Transaction, [], ("pk",)) == []


def test_new_rows_returned_without_an_open_transaction_too():
    from transactions.models import Transaction

    charger = Charger.objects.create(charge_point_id="CP-RET2")
    returned = insert_new_returning(Transaction, [{"charger_id": charger.pk, "connector_id": 1, "id_tag": "A"}],
                                    ("pk", "id_tag"))
    assert [(Transaction.objects.get(pk=pk).id_tag, tag) for pk, tag in returned] == [("A", "A")]
