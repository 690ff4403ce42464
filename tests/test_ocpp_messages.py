"""Charger-initiated actions: status, authorize, transactions, meter values, data transfer."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3

import pytest
from ocpp.v16 import call

from badges.models import Badge, BadgeStatus
from chargers.models import Charger, Connector, RegistrationStatus
from tests.ocpp_sim import utc_iso
from transactions.models import MeterSample, Transaction, TransactionState

T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def charger(accepted_charger):
    return accepted_charger("CP-MSG")


def meter_value(moment: dt.datetime, wh: int, amps: float | None = None) -> dict:
    sampled = [{"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]
    if amps is not None:
        sampled += [
            {"value": str(amps), "measurand": "Current.Import", "phase": phase, "unit": "A"}
            for phase in ("L1", "L2", "L3")
        ]
    return {"timestamp": utc_iso(moment), "sampledValue": sampled}


def test_it_stores_status_notifications_and_ignores_older_replays(charger):
    charger.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging",
                                         timestamp=utc_iso(T0 + dt.timedelta(minutes=5))))
    charger.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing",
                                         timestamp=utc_iso(T0)))
    connector = Connector.objects.get(charger__charge_point_id="CP-MSG", connector_id=1)
    assert connector.status == "Charging"
    assert connector.status_at == T0 + dt.timedelta(minutes=5)


@pytest.mark.parametrize(
    ("badge", "expected"),
    [
        ({"status": BadgeStatus.ACCEPTED}, "Accepted"),
        ({"status": BadgeStatus.BLOCKED}, "Blocked"),
        ({"status": BadgeStatus.ACCEPTED, "expires_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}, "Expired"),
        (None, "Invalid"),
    ],
)
def test_authorize_answers_from_the_badges(charger, badge, expected):
    if badge is not None:
        Badge.objects.create(id_tag="TAG-1", **badge)
    answer = charger.call(call.Authorize(id_tag="TAG-1"))
    assert answer.id_tag_info["status"] == expected


def test_a_full_transaction_is_recorded_with_the_chargers_timestamps(charger):
    Badge.objects.create(id_tag="DRIVER")
    start = charger.call(call.StartTransaction(connector_id=1, id_tag="DRIVER", meter_start=1000,
                                               timestamp=utc_iso(T0)))
    assert start.id_tag_info["status"] == "Accepted"
    tx_id = start.transaction_id
    charger.call(call.MeterValues(connector_id=1, transaction_id=tx_id,
                                  meter_value=[meter_value(T0 + dt.timedelta(minutes=1), 1300, 16.0)]))
    stop = charger.call(call.StopTransaction(
        meter_stop=5000, timestamp=utc_iso(T0 + dt.timedelta(hours=1)), transaction_id=tx_id, reason="EVDisconnected",
        id_tag="DRIVER", transaction_data=[meter_value(T0 + dt.timedelta(minutes=59), 4990)]))
    assert stop.id_tag_info["status"] == "Accepted"
    record = Transaction.objects.get(pk=tx_id)
    assert record.state == TransactionState.COMPLETED
    assert (record.start_time, record.stop_time) == (T0, T0 + dt.timedelta(hours=1))
    assert record.energy_wh == 4000
    assert record.stop_reason == "EVDisconnected"
    samples = MeterSample.objects.filter(transaction=record)
    assert samples.count() == 5
    assert sorted(samples.filter(measurand="Current.Import").values_list("phase", flat=True)) == ["L1", "L2", "L3"]


def test_a_start_with_an_unknown_badge_gets_an_id_and_invalid(charger):
    start = charger.call(call.StartTransaction(connector_id=2, id_tag="NOBODY", meter_start=0, timestamp=utc_iso(T0)))
    assert start.transaction_id > 0
    assert start.id_tag_info["status"] == "Invalid"
    assert Transaction.objects.get(pk=start.transaction_id).id_tag_status == "Invalid"


def test_a_replayed_start_gets_the_same_transaction_id(charger):
    Badge.objects.create(id_tag="DRIVER")
    payload = dict(connector_id=1, id_tag="DRIVER", meter_start=10, timestamp=utc_iso(T0))
    first = charger.call(call.StartTransaction(**payload))
    again = charger.call(call.StartTransaction(**payload))
    assert first.transaction_id == again.transaction_id
    assert Transaction.objects.count() == 1


def test_a_stop_for_an_unknown_transaction_is_answered_and_kept(charger):
    stop = charger.call(call.StopTransaction(
        meter_stop=777, timestamp=utc_iso(T0), transaction_id=424242, reason="PowerLoss",
        transaction_data=[meter_value(T0, 777)]))
    assert stop.id_tag_info is None
    record = Transaction.objects.get(charger_transaction_id=424242)
    assert record.state == TransactionState.UNMATCHED
    assert record.meter_stop_wh == 777
    assert MeterSample.objects.filter(transaction=record).count() == 1


def test_a_stop_without_reason_defaults_to_local(charger):
    Badge.objects.create(id_tag="DRIVER")
    start = charger.call(call.StartTransaction(connector_id=1, id_tag="DRIVER", meter_start=0, timestamp=utc_iso(T0)))
    charger.call(call.StopTransaction(meter_stop=10, timestamp=utc_iso(T0), transaction_id=start.transaction_id))
    assert Transaction.objects.get(pk=start.transaction_id).stop_reason == "Local"


def test_meter_values_without_transaction_are_stored_on_the_connector(charger):
    charger.call(call.MeterValues(connector_id=0, meter_value=[meter_value(T0, 123456)]))
    sample = MeterSample.objects.get(charger__charge_point_id="CP-MSG")
    assert (sample.connector_id, sample.transaction, sample.value, sample.timestamp) == (0, None, 123456.0, T0)


def test_data_transfer_for_an_unknown_vendor(charger):
    answer = charger.call(call.DataTransfer(vendor_id="com.example", message_id="hello", data="{}"))
    assert answer.status == "UnknownVendorId"


def test_firmware_and_diagnostics_status_are_recorded(charger):
    charger.call(call.FirmwareStatusNotification(status="Downloading"))
    charger.call(call.DiagnosticsStatusNotification(status="Uploaded"))
    record = Charger.objects.get(charge_point_id="CP-MSG")
    assert (record.firmware_status, record.diagnostics_status) == ("Downloading", "Uploaded")


def test_offline_queue_replayed_in_order_keeps_original_timestamps(ocpp_url, charger_factory):
    """A charger that charged while offline replays Start, MeterValues and Stop after reconnecting."""
    Charger.objects.create(charge_point_id="CP-OFFLINE", registration_status=RegistrationStatus.ACCEPTED)
    Badge.objects.create(id_tag="DRIVER")
    sim = charger_factory(ocpp_url, "CP-OFFLINE").connect()
    sim.boot()
    sim.close()
    replay = charger_factory(ocpp_url, "CP-OFFLINE").connect()
    replay.boot()
    start = replay.call(call.StartTransaction(connector_id=1, id_tag="DRIVER", meter_start=0,
                                              timestamp=utc_iso(T0 - dt.timedelta(hours=3))))
    for minute in (10, 20, 30):
        moment = T0 - dt.timedelta(hours=3) + dt.timedelta(minutes=minute)
        replay.call(call.MeterValues(connector_id=1, transaction_id=start.transaction_id,
                                     meter_value=[meter_value(moment, minute * 100)]))
    replay.call(call.StopTransaction(meter_stop=3500, timestamp=utc_iso(T0 - dt.timedelta(hours=2)),
                                     transaction_id=start.transaction_id, reason="Local"))
    record = Transaction.objects.get(pk=start.transaction_id)
    assert record.start_time == T0 - dt.timedelta(hours=3)
    assert record.stop_time == T0 - dt.timedelta(hours=2)
    values = list(MeterSample.objects.filter(transaction=record).order_by("id").values_list("value", flat=True))
    assert values == [1000.0, 2000.0, 3000.0]


@contextlib.contextmanager
def meter_samples_locked():
    """Hold a lock that stops every write of MeterSample rows, from a connection of our own."""
    from django.db import connection

    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        other = sqlite3.connect(settings_dict["NAME"], isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the database's one write lock
    else:
        import psycopg

        other = psycopg.connect(host=settings_dict["HOST"] or "127.0.0.1", port=settings_dict["PORT"] or 5432,
                                user=settings_dict["USER"], dbname=settings_dict["NAME"])
        other.execute("LOCK TABLE transactions_metersample IN EXCLUSIVE MODE")  # reads only
    try:
        yield
    finally:
        other.rollback()
        other.close()


def test_meter_values_answered_on_receipt_are_stored_right_after(servers, transactional_db, charger_factory):
    """OCPP_METER_VALUES_ANSWER=received: answered once validated and queued, even while the
    database cannot take the samples yet (the boot's own calls to the charger and their answers
    are under way meanwhile); written as soon as it can. A frame that fails validation is still
    refused with a CALLERROR."""
    from tests.conftest import wait_until

    url = servers.daphne(OCPP_METER_VALUES_ANSWER="received")
    Charger.objects.create(charge_point_id="CP-RCV", registration_status=RegistrationStatus.ACCEPTED)
    sim = charger_factory(url, "CP-RCV").connect()
    sim.boot()
    with meter_samples_locked():
        for n in range(20):
            sim.call(call.MeterValues(connector_id=1,
                                      meter_value=[meter_value(T0 + dt.timedelta(seconds=n), 1000 + n)]))
        assert not MeterSample.objects.filter(charger__charge_point_id="CP-RCV").exists()
    wait_until(lambda: MeterSample.objects.filter(charger__charge_point_id="CP-RCV").count() == 20)
    sim.send_raw(json.dumps([2, "bad-1", "MeterValues", {"connectorId": 1, "meterValue": [
        {"timestamp": utc_iso(T0), "sampledValue": [{"value": 5}]}]}]))  # value must be a string
    refused = sim.recv_raw_response()
    assert (refused.unique_id, refused.error_code) == ("bad-1", "TypeConstraintViolation")
    assert sorted(MeterSample.objects.values_list("value", flat=True)) == [1000.0 + n for n in range(20)]


def test_meter_values_answered_on_receipt_wait_for_their_commit_once_the_writer_is_behind(
        servers, transactional_db, charger_factory):
    """OCPP_METER_VALUES_ANSWER=received answers without waiting only while the writer keeps
    up: once the oldest write queued behind the batch being written has waited
    OCPP_WRITE_BEHIND_MS (here the database takes none), a MeterValues is answered once its
    samples are committed. The charger, one CALL at a time, then waits, and the backlog stops
    growing. Nothing is lost."""
    import time

    from tests.conftest import wait_until

    url = servers.daphne(OCPP_METER_VALUES_ANSWER="received", OCPP_WRITE_BEHIND_MS="300")
    Charger.objects.create(charge_point_id="CP-BEHIND", registration_status=RegistrationStatus.ACCEPTED)
    sim = charger_factory(url, "CP-BEHIND").connect()
    sim.boot()
    sent = 0
    with meter_samples_locked():
        answered_at_once = 0
        while True:
            sim.send_raw(json.dumps([2, f"mv-{sent}", "MeterValues", {"connectorId": 1, "meterValue": [
                meter_value(T0 + dt.timedelta(seconds=sent), 1000 + sent)]}]))
            sent += 1
            try:
                answer = sim.recv_raw_response(timeout=2)
            except TimeoutError:
                break  # held until its samples are committed
            assert answer.unique_id == f"mv-{sent - 1}"
            answered_at_once += 1
            # One every 0.1 s: the bound (0.3 s) and the linger (0.1 s) are passed by the 5th or so.
            assert sent < 15, "the backlog grew past its bound and MeterValues were still answered at once"
            time.sleep(0.1)
        assert answered_at_once >= 1  # answered on receipt while the backlog was below the bound
        assert not MeterSample.objects.filter(charger__charge_point_id="CP-BEHIND").exists()
    held = sim.recv_raw_response(timeout=10)  # the database takes writes again: committed, answered
    assert held.unique_id == f"mv-{sent - 1}"
    wait_until(lambda: MeterSample.objects.filter(charger__charge_point_id="CP-BEHIND").count() == sent)
    assert sorted(MeterSample.objects.values_list("value", flat=True)) == [1000.0 + n for n in range(sent)]
