"""Server-initiated calls from synchronous code through the real Redis channel layer."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from chargers.commands import ChargerOffline, ChargerTimeout, InvalidCall, send_call
from chargers.models import AutoConfigurationKey, Charger, ConfigurationKey, RegistrationStatus
from tests.conftest import wait_until

PROFILE = {
    "connectorId": 0,
    "csChargingProfiles": {
        "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.5}]},
    },
}

CALLS = [
    ("Reset", {"type": "Soft"}, {"status": "Accepted"}),
    ("RemoteStartTransaction", {"idTag": "DRIVER", "connectorId": 1}, {"status": "Accepted"}),
    ("RemoteStopTransaction", {"transactionId": 12}, {"status": "Accepted"}),
    ("UnlockConnector", {"connectorId": 1}, {"status": "Unlocked"}),
    ("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}, {"status": "Accepted"}),
    ("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "60"}, {"status": "Accepted"}),
    ("ClearCache", {}, {"status": "Accepted"}),
    ("TriggerMessage", {"requestedMessage": "StatusNotification"}, {"status": "Accepted"}),
    ("SetChargingProfile", PROFILE, {"status": "Accepted"}),
    ("ClearChargingProfile", {"id": 1}, {"status": "Accepted"}),
    ("GetCompositeSchedule", {"connectorId": 1, "duration": 3600}, {"status": "Rejected"}),
    ("SendLocalList", {"listVersion": 1, "updateType": "Full", "localAuthorizationList": []}, {"status": "Accepted"}),
    ("GetLocalListVersion", {}, {"listVersion": 0}),
    ("UpdateFirmware", {"location": "https://fw.example/1.bin", "retrieveDate": "2026-11-23T00:00:00Z"}, {}),
    ("GetDiagnostics", {"location": "ftp://diag.example/"}, {"fileName": "diag.zip"}),
    ("ReserveNow", {"connectorId": 1, "expiryDate": "2026-11-23T10:00:00Z", "idTag": "D", "reservationId": 5},
     {"status": "Accepted"}),
    ("CancelReservation", {"reservationId": 5}, {"status": "Accepted"}),
    ("DataTransfer", {"vendorId": "com.example", "messageId": "ping"}, {"status": "Accepted", "data": "pong"}),
]


@pytest.fixture
def charger(accepted_charger):
    return accepted_charger("CP-CMD")


@pytest.mark.parametrize(("action", "payload", "expected"), CALLS, ids=[c[0] for c in CALLS])
def test_every_central_system_call_reaches_the_charger(charger, action, payload, expected):
    assert send_call("CP-CMD", action, payload) == expected
    assert action in [name for name, _ in charger.cp.received]


def test_an_offline_charger_gives_a_clear_error(ocpp_url):
    Charger.objects.create(charge_point_id="CP-GONE", registration_status=RegistrationStatus.ACCEPTED)
    with pytest.raises(ChargerOffline, match="offline"):
        send_call("CP-GONE", "Reset", {"type": "Soft"})
    with pytest.raises(ChargerOffline, match="unknown charger"):
        send_call("CP-NEVER", "Reset", {"type": "Soft"})


def test_a_silent_charger_times_out(charger):
    charger.cp.silent = True
    with pytest.raises(ChargerTimeout):
        send_call("CP-CMD", "Reset", {"type": "Hard"}, timeout_s=1)


def test_an_invalid_payload_is_refused_before_sending(charger):
    with pytest.raises(InvalidCall, match="Reset payload rejected"):
        send_call("CP-CMD", "Reset", {"type": "Gentle"})
    with pytest.raises(InvalidCall, match="not an OCPP 1.6 central-system request"):
        send_call("CP-CMD", "Heartbeat", {})
    assert not {"Reset", "Heartbeat"} & {name for name, _ in charger.cp.received}


def test_the_management_command_prints_the_answer(charger):
    out = io.StringIO()
    call_command("ocpp_call", "CP-CMD", "GetConfiguration", "{}", stdout=out)
    keys = {item["key"] for item in json.loads(out.getvalue())["configurationKey"]}
    assert "HeartbeatInterval" in keys
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("ocpp_call", "CP-CMD", "Reset", "{oops")


def test_boot_applies_the_automatic_configuration(ocpp_url, charger_factory):
    AutoConfigurationKey.objects.all().delete()
    AutoConfigurationKey.objects.create(key="MeterValueSampleInterval", value="10")
    AutoConfigurationKey.objects.create(key="MeterValuesSampledData", value="Energy.Active.Import.Register")
    AutoConfigurationKey.objects.create(key="Disabled", value="x", enabled=False)
    Charger.objects.create(charge_point_id="CP-CONF", registration_status=RegistrationStatus.ACCEPTED)
    sim = charger_factory(ocpp_url, "CP-CONF").connect()
    sim.cp.answers["ChangeConfiguration:MeterValuesSampledData"] = "Rejected"
    sim.boot()
    charger = Charger.objects.get(charge_point_id="CP-CONF")
    wait_until(lambda: ConfigurationKey.objects.filter(charger=charger, key="ChargeProfileMaxStackLevel").exists())
    statuses = dict(ConfigurationKey.objects.filter(charger=charger).values_list("key", "last_change_status"))
    assert statuses["MeterValueSampleInterval"] == "Accepted"
    assert statuses["MeterValuesSampledData"] == "Rejected"
    assert "Disabled" not in statuses
    assert sim.cp.config["MeterValueSampleInterval"] == "10"


def test_accepting_a_connected_pending_charger_configures_it(ocpp_url, charger_factory):
    """The admin's accept action queues this task; here it runs as a Celery worker would run it."""
    from chargers.services import chargers_set_registration
    from chargers.tasks import configure_charger

    AutoConfigurationKey.objects.all().delete()
    AutoConfigurationKey.objects.create(key="HeartbeatInterval", value="120")
    sim = charger_factory(ocpp_url, "CP-LATE").connect()
    assert sim.boot().status == "Pending"
    charger = Charger.objects.get(charge_point_id="CP-LATE")
    chargers_set_registration(charger_pks=[charger.pk], status=RegistrationStatus.ACCEPTED)
    assert configure_charger(charger.pk) == {"HeartbeatInterval": "Accepted"}
    assert sim.cp.config["HeartbeatInterval"] == "120"
    assert ConfigurationKey.objects.get(charger=charger, key="HeartbeatInterval").last_change_status == "Accepted"


def test_an_unreachable_channel_layer_is_one_clear_error(transactional_db, monkeypatch):
    import pytest
    from redis.exceptions import ConnectionError as RedisConnectionError

    from chargers import commands
    from chargers.models import Charger

    Charger.objects.create(charge_point_id="CP-NOREDIS", connected=True, channel_name="specific.x!y")

    class DownLayer:
        async def new_channel(self) -> str:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(commands, "get_channel_layer", lambda: DownLayer())
    with pytest.raises(commands.LayerUnavailable, match="channel layer .Redis. is unreachable"):
        commands.send_call("CP-NOREDIS", "ClearCache", {})


def test_a_disconnect_answers_a_call_in_flight_at_once(accepted_charger):
    import threading
    import time

    sim = accepted_charger("CP-DROP")
    sim.cp.silent = True  # it will never answer the Reset
    outcome: dict[str, object] = {}

    def call() -> None:
        started = time.monotonic()
        try:
            send_call("CP-DROP", "Reset", {"type": "Soft"}, timeout_s=30)
        except Exception as error:  # noqa: BLE001 - the outcome is what the test looks at
            outcome["error"] = error
        outcome["seconds"] = time.monotonic() - started

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: any(action == "Reset" for action, _ in sim.cp.received))
    sim.close()  # the link drops while the charger holds the call
    caller.join(10)
    assert isinstance(outcome.get("error"), ChargerOffline)  # "disconnected before answering", not a timeout
    assert outcome["seconds"] < 5  # not the 30 s timeout
