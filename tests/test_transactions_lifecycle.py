"""Sessions from real `ocpp` chargers: figures, offline starts, and sessions nobody stopped."""

from __future__ import annotations

import datetime as dt

import pytest
from ocpp.v16 import call

from badges.models import Badge
from chargers.models import Charger, RegistrationStatus
from tests.conftest import wait_until
from tests.ocpp_sim import utc_iso
from transactions.models import ClosedBy, Transaction, TransactionState
from transactions.tasks import close_stale_transactions

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)


def meter(moment: dt.datetime, wh: float, power_w: float | None = None, unit: str = "Wh") -> dict:
    sampled = [{"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": unit}]
    if power_w is not None:
        sampled.append({"value": str(power_w), "measurand": "Power.Active.Import", "unit": "W"})
    return {"timestamp": utc_iso(moment), "sampledValue": sampled}


@pytest.fixture
def charger(ocpp_url, charger_factory):
    Badge.objects.create(id_tag="DRIVER", holder="Dee River")
    Charger.objects.create(charge_point_id="CP-TX", registration_status=RegistrationStatus.ACCEPTED)
    sim = charger_factory(ocpp_url, "CP-TX").connect()
    sim.boot()
    return sim


def start(sim, at: dt.datetime = T0, meter_start: int = 1000, connector: int = 1) -> int:
    return sim.call(call.StartTransaction(connector_id=connector, id_tag="driver", meter_start=meter_start,
                                          timestamp=utc_iso(at))).transaction_id


def test_a_session_records_energy_duration_and_power(charger):
    tx = start(charger)
    charger.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[
        meter(T0 + dt.timedelta(minutes=10), 2.2, 7400, unit="kWh"),
        meter(T0 + dt.timedelta(minutes=20), 3.4, 7100, unit="kWh"),
    ]))
    live = Transaction.objects.get(pk=tx)
    assert (live.energy_wh, live.last_meter_wh, live.peak_power_w) == (2400, 3400, 7400.0)
    assert live.badge.holder == "Dee River"  # matched ignoring case
    charger.call(call.StopTransaction(meter_stop=4000, timestamp=utc_iso(T0 + dt.timedelta(minutes=30)),
                                      transaction_id=tx, reason="EVDisconnected"))
    record = Transaction.objects.get(pk=tx)
    assert (record.energy_wh, record.duration, record.closed_by) == (3000, dt.timedelta(minutes=30), ClosedBy.CHARGER)
    assert record.average_power_w == pytest.approx(6000)


def test_an_offline_session_is_accepted_and_reconciled(charger):
    """Started while offline with a badge that expired since: recorded, answered Expired, flagged."""
    Badge.objects.filter(id_tag="DRIVER").update(expires_at=T0 + dt.timedelta(minutes=30))
    offline_start = T0 - dt.timedelta(hours=2)
    tx = start(charger, at=offline_start)
    charger.call(call.MeterValues(connector_id=1, transaction_id=tx,
                                  meter_value=[meter(offline_start + dt.timedelta(minutes=5), 1500)]))
    stop = charger.call(call.StopTransaction(meter_stop=2500, timestamp=utc_iso(offline_start + dt.timedelta(hours=1)),
                                             transaction_id=tx, id_tag="DRIVER"))
    record = Transaction.objects.get(pk=tx)
    assert record.offline
    assert (record.id_tag_status, record.auth_status_at_start) == ("Expired", "Accepted")
    assert stop.id_tag_info["status"] == "Expired"
    assert (record.state, record.energy_wh, record.badge.id_tag) == (TransactionState.COMPLETED, 1500, "DRIVER")


def test_a_reboot_closes_the_open_session_until_the_charger_says_otherwise(charger):
    tx = start(charger)
    charger.call(call.MeterValues(connector_id=1, transaction_id=tx,
                                  meter_value=[meter(T0 + dt.timedelta(minutes=10), 1800, 4800)]))
    charger.boot()  # rebooted without stopping the session
    closed = wait_until(lambda: Transaction.objects.filter(pk=tx, state=TransactionState.COMPLETED).first())
    assert (closed.stop_reason, closed.closed_by) == ("charger rebooted", ClosedBy.SYSTEM)
    assert (closed.stop_time, closed.meter_stop_wh, closed.energy_wh) == (T0 + dt.timedelta(minutes=10), 1800, 800)
    # A session started after the boot stays open.
    fresh = start(charger, at=dt.datetime.now(dt.UTC), connector=2)
    # Values measured before the boot, delivered late, change nothing...
    charger.call(call.MeterValues(connector_id=1, transaction_id=tx,
                                  meter_value=[meter(T0 + dt.timedelta(minutes=12), 1850)]))
    assert Transaction.objects.get(pk=tx).state == TransactionState.COMPLETED
    # ...values measured after it mean the charger kept the session running: reopened.
    charger.call(call.MeterValues(connector_id=1, transaction_id=tx,
                                  meter_value=[meter(dt.datetime.now(dt.UTC), 1900)]))
    reopened = Transaction.objects.get(pk=tx)
    assert (reopened.state, reopened.stop_time, reopened.energy_wh) == (TransactionState.ACTIVE, None, 900)
    # The charger's own StopTransaction has the last word.
    charger.call(call.StopTransaction(meter_stop=2000, timestamp=utc_iso(), transaction_id=tx, reason="Local"))
    record = Transaction.objects.get(pk=tx)
    assert (record.stop_reason, record.closed_by, record.energy_wh) == ("Local", ClosedBy.CHARGER, 1000)
    assert Transaction.objects.get(pk=fresh).state == TransactionState.ACTIVE


def test_a_later_stop_replaces_the_systems_close(charger):
    tx = start(charger)
    charger.boot()
    wait_until(lambda: Transaction.objects.filter(pk=tx, state=TransactionState.COMPLETED).exists())
    charger.call(call.StopTransaction(meter_stop=2000, timestamp=utc_iso(T0 + dt.timedelta(minutes=15)),
                                      transaction_id=tx, reason="Reboot"))
    record = Transaction.objects.get(pk=tx)
    assert (record.stop_reason, record.closed_by, record.energy_wh) == ("Reboot", ClosedBy.CHARGER, 1000)
    assert record.stop_time == T0 + dt.timedelta(minutes=15)


def test_a_new_session_on_the_connector_closes_the_forgotten_one(charger):
    forgotten = start(charger)
    newer = start(charger, at=T0 + dt.timedelta(minutes=40), meter_start=5000)
    record = Transaction.objects.get(pk=forgotten)
    assert (record.state, record.stop_reason, record.stop_time) == (
        TransactionState.COMPLETED, "superseded by new session", T0 + dt.timedelta(minutes=40))
    assert Transaction.objects.get(pk=newer).state == TransactionState.ACTIVE


def test_a_vanished_chargers_session_is_closed_by_the_beat_task(charger, monkeypatch):
    tx = start(charger)
    charger.call(call.MeterValues(connector_id=1, transaction_id=tx,
                                  meter_value=[meter(T0 + dt.timedelta(minutes=5), 1600)]))
    charger.run(charger.ws.close())  # gone: no stop, no heartbeat
    wait_until(lambda: not Charger.objects.get(charge_point_id="CP-TX").connected)
    monkeypatch.setattr("evce.clock.now", lambda: dt.datetime.now(dt.UTC) + dt.timedelta(hours=11))
    assert close_stale_transactions() == []
    monkeypatch.setattr("evce.clock.now", lambda: dt.datetime.now(dt.UTC) + dt.timedelta(hours=13))
    assert close_stale_transactions() == [tx]
    record = Transaction.objects.get(pk=tx)
    assert (record.stop_reason, record.closed_by) == ("charger silent for 12 h", ClosedBy.SYSTEM)
    assert (record.stop_time, record.energy_wh) == (T0 + dt.timedelta(minutes=5), 600)


def test_a_session_forgotten_by_a_live_charger_is_closed_when_its_connector_is_free(charger):
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=13)
    tx = start(charger, at=long_ago)
    # Booted before the session was recorded back then: the boot step that closes the sessions a
    # reboot ended (it runs asynchronously after the boot) must not take it for one of them.
    Charger.objects.filter(charge_point_id="CP-TX").update(last_boot_at=long_ago - dt.timedelta(hours=1))
    Transaction.objects.filter(pk=tx).update(created_at=long_ago)  # recorded back then too
    charger.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
    assert close_stale_transactions() == []  # the charger talks and the car is plugged in: keep it
    charger.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
    assert close_stale_transactions() == [tx]
    record = Transaction.objects.get(pk=tx)
    assert (record.stop_reason, record.stop_time) == ("connector available, no stop", long_ago)
