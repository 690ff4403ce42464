"""Registration: unknown-charger policies, BootNotification, heartbeat, auth."""

from __future__ import annotations

import pytest
import websockets
from ocpp.v16 import call

from chargers.models import Charger, OcppMessage, RegistrationStatus
from tests.conftest import wait_until


def test_it_registers_an_unknown_charger_as_pending(ocpp_url, charger_factory):
    sim = charger_factory(ocpp_url, "CP-PENDING").connect()
    answer = sim.boot(vendor="Acme", model="Wallbox")
    assert answer.status == "Pending"
    charger = Charger.objects.get(charge_point_id="CP-PENDING")
    assert charger.registration_status == RegistrationStatus.PENDING
    assert (charger.vendor, charger.model, charger.connected) == ("Acme", "Wallbox", True)


def test_it_records_every_boot_notification_field(ocpp_url, charger_factory):
    sim = charger_factory(ocpp_url, "CP-FULL").connect()
    sim.call(call.BootNotification(
        charge_point_vendor="Acme", charge_point_model="W22", charge_point_serial_number="SN-1",
        charge_box_serial_number="BOX-1", firmware_version="1.2.3", iccid="8931", imsi="2620",
        meter_type="iEM", meter_serial_number="M-9"))
    charger = Charger.objects.get(charge_point_id="CP-FULL")
    assert (charger.serial_number, charger.charge_box_serial_number, charger.firmware_version, charger.iccid,
            charger.imsi, charger.meter_type, charger.meter_serial_number) == (
        "SN-1", "BOX-1", "1.2.3", "8931", "2620", "iEM", "M-9")
    assert charger.last_boot_at is not None


def test_it_answers_security_error_before_acceptance(ocpp_url, charger_factory):
    sim = charger_factory(ocpp_url, "CP-NOTYET").connect()
    sim.boot()
    with pytest.raises(Exception) as error:
        sim.call(call.Heartbeat())
    assert error.value.code == "SecurityError"


def test_a_pending_charger_accepted_while_connected_is_served_at_its_next_frame(ocpp_url, charger_factory):
    """Until accepted, every frame re-reads the registration (chargers' re-checks go in one query
    per process: services.chargers_accepted_many)."""
    sim = charger_factory(ocpp_url, "CP-LATER").connect()
    sim.boot()
    with pytest.raises(Exception) as error:
        sim.call(call.Heartbeat())
    assert error.value.code == "SecurityError"
    Charger.objects.filter(charge_point_id="CP-LATER").update(registration_status=RegistrationStatus.ACCEPTED)
    assert sim.call(call.Heartbeat()).current_time


@pytest.mark.parametrize("path", ["admin action", "api"])
def test_a_charger_rejected_by_the_operator_while_connected_is_refused_without_waiting_for_its_re_read(
        ocpp_url, charger_factory, path):
    """The operator's change reaches the connection through the channel layer: its next frames are
    refused at once, not after its periodic re-read (every 10 s); accepted again, it is served."""
    from chargers.services import chargers_set_registration, registration_changed

    charger = Charger.objects.create(charge_point_id="CP-TOLD", registration_status=RegistrationStatus.ACCEPTED)
    sim = charger_factory(ocpp_url, "CP-TOLD").connect()
    assert sim.call(call.Heartbeat()).current_time
    wait_until(lambda: Charger.objects.filter(pk=charger.pk, connected=True).exclude(channel_name="").exists())

    def set_status(status: str) -> None:
        if path == "admin action":
            chargers_set_registration(charger_pks=[charger.pk], status=status)
        else:  # what the API's and the admin form's saves call
            Charger.objects.filter(pk=charger.pk).update(registration_status=status)
            registration_changed(charger_pks=[charger.pk], status=status)

    def heartbeat_refused() -> bool:
        try:
            sim.call(call.Heartbeat())
        except Exception as error:  # noqa: BLE001 - the simulator raises the CALLERROR
            return getattr(error, "code", None) == "SecurityError"
        return False

    set_status(RegistrationStatus.REJECTED)
    wait_until(heartbeat_refused, timeout_s=3)
    wait_until(lambda: OcppMessage.objects.filter(charge_point_id="CP-TOLD",
                                                  action="registration changed: not accepted").exists())
    set_status(RegistrationStatus.ACCEPTED)
    wait_until(lambda: not heartbeat_refused(), timeout_s=3)


def test_the_acceptance_of_many_chargers_is_read_in_one_query(db, django_assert_num_queries):
    from chargers.services import chargers_accepted_many

    accepted = Charger.objects.create(charge_point_id="CP-A", registration_status=RegistrationStatus.ACCEPTED)
    pending = Charger.objects.create(charge_point_id="CP-P", registration_status=RegistrationStatus.PENDING)
    rejected = Charger.objects.create(charge_point_id="CP-R", registration_status=RegistrationStatus.REJECTED)
    with django_assert_num_queries(1):
        seen = chargers_accepted_many([accepted.pk, pending.pk, rejected.pk, 999_999])
    assert seen == {accepted.pk: True, pending.pk: False, rejected.pk: False, 999_999: False}


def test_it_accepts_a_charger_accepted_by_the_admin(ocpp_url, charger_factory):
    Charger.objects.create(charge_point_id="CP-OK", registration_status=RegistrationStatus.ACCEPTED,
                           heartbeat_interval_s=120)
    sim = charger_factory(ocpp_url, "CP-OK").connect()
    answer = sim.boot()
    assert answer.status == "Accepted"
    assert answer.interval == 120
    assert sim.call(call.Heartbeat()).current_time


def test_it_auto_accepts_with_the_accept_policy(servers, transactional_db, charger_factory):
    url = servers.daphne(OCPP_UNKNOWN_CHARGERS="accept")
    sim = charger_factory(url, "CP-AUTO").connect()
    assert sim.boot().status == "Accepted"
    assert Charger.objects.get(charge_point_id="CP-AUTO").registration_status == RegistrationStatus.ACCEPTED


def test_it_refuses_unknown_chargers_with_the_reject_policy(servers, transactional_db, charger_factory):
    url = servers.daphne(OCPP_UNKNOWN_CHARGERS="reject")
    with pytest.raises(websockets.InvalidStatus):
        charger_factory(url, "CP-STRANGER").connect()
    assert not Charger.objects.filter(charge_point_id="CP-STRANGER").exists()
    assert OcppMessage.objects.filter(charge_point_id="CP-STRANGER", action="connection refused").exists()


@pytest.mark.parametrize("offered", [["ocpp2.0.1"], []])
def test_it_completes_then_closes_a_handshake_without_the_ocpp16_subprotocol(ocpp_url, charger_factory, offered):
    """OCPP-J §3.2: finish the handshake without a Sec-WebSocket-Protocol header, then close."""
    sim = charger_factory(ocpp_url, "CP-NOPROTO", subprotocols=offered).connect()
    assert sim.ws.subprotocol is None
    assert sim.wait_closed() == 4001
    assert not Charger.objects.filter(charge_point_id="CP-NOPROTO").exists()


def test_it_requires_the_password_when_one_is_set(ocpp_url, charger_factory):
    charger = Charger(charge_point_id="CP-SECURE", registration_status=RegistrationStatus.ACCEPTED)
    charger.set_password("s3cret-passw0rd")
    charger.save()
    with pytest.raises(websockets.InvalidStatus):
        charger_factory(ocpp_url, "CP-SECURE").connect()
    with pytest.raises(websockets.InvalidStatus):
        charger_factory(ocpp_url, "CP-SECURE", password="wrong").connect()
    sim = charger_factory(ocpp_url, "CP-SECURE", password="s3cret-passw0rd").connect()
    assert sim.boot().status == "Accepted"
    # Verified moments ago: the reconnect is admitted without hashing again, and replaces the first.
    again = charger_factory(ocpp_url, "CP-SECURE", password="s3cret-passw0rd").connect()
    assert sim.wait_closed() == 4000
    assert again.boot().status == "Accepted"
    assert Charger.objects.get(charge_point_id="CP-SECURE").connected


def test_a_reconnect_replaces_the_old_connection(ocpp_url, charger_factory):
    Charger.objects.create(charge_point_id="CP-TWICE", registration_status=RegistrationStatus.ACCEPTED)
    first = charger_factory(ocpp_url, "CP-TWICE").connect()
    first.boot()
    second = charger_factory(ocpp_url, "CP-TWICE").connect()
    assert first.wait_closed() == 4000
    assert second.boot().status == "Accepted"
    charger = Charger.objects.get(charge_point_id="CP-TWICE")
    assert charger.connected
    assert second.call(call.Heartbeat()).current_time


def test_disconnect_marks_the_charger_offline(ocpp_url, charger_factory):
    sim = charger_factory(ocpp_url, "CP-BYE").connect()
    sim.boot()
    sim.close()
    wait_until(lambda: not Charger.objects.get(charge_point_id="CP-BYE").connected)
