"""The meters admin: list, "Test connection" against real Modbus servers, CSV export, form errors."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from loadmgmt.services import zone_record_measurement
from meters.models import Meter, MeterReading
from meters.registers import get_register_map
from tests.meters_fakes import closed_port, typical_values
from tests.meters_lab import T0, at, dynamic_zone, make_meter

pytestmark = pytest.mark.django_db

IEM = get_register_map("iem3x5x")
CHANGELIST = "/admin/meters/meter/"


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    # No password: hashing one costs more than the test (force_login does not need it).
    client.force_login(User.objects.create(username="root", is_staff=True, is_superuser=True))
    return client


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def run_action(client: Client, action: str, meters: list[Meter], url: str = CHANGELIST) -> Any:
    return client.post(url, {"action": action, "_selected_action": [m.pk for m in meters]}, follow=True)


@pytest.mark.slow
def test_test_connection_shows_live_values_and_stores_nothing(admin_client, lab):
    fake = lab.meter(IEM, typical_values(IEM) | {"frequency_hz": 49.98})
    fake.set_words("voltage_l3_v", [0xFFC0, 0x0000])
    meter = make_meter(lab, fake, "Incomer")

    shown = messages_of(run_action(admin_client, "test_connection", [meter]))

    assert shown[0].startswith("Incomer: OK - power_w 21060 W, power_l1_w 7250 W, power_l2_w 6980 W")
    assert "current_l1_a 31.5 A, current_l2_a 30.25 A, current_l3_a 29.75 A" in shown[0]
    assert "frequency_hz 49.98 Hz" in shown[0]
    assert "energy_import_wh 123456789 Wh" in shown[0]
    assert shown[1].startswith("Incomer: voltage_l3_v not read:") and "NaN" in shown[1]
    meter.refresh_from_db()
    assert (meter.last_reading_at, meter.last_values) == (None, {})


@pytest.mark.slow
def test_test_connection_shows_a_clear_error(admin_client, lab):
    silent = lab.meter(IEM, silent=True)
    meters = [
        Meter.objects.create(name="Unplugged", host="127.0.0.1", port=closed_port(), timeout_s=0.5),
        make_meter(lab, silent, "Silent"),
    ]
    shown = messages_of(run_action(admin_client, "test_connection", meters))
    assert any(m.startswith("Unplugged: FAILED - iem3x5x tcp 127.0.0.1:") and "connect" in m for m in shown)
    assert any(m.startswith("Silent: FAILED - ") and "no answer within 0.3 s" in m for m in shown)


def test_the_meter_list_shows_status(admin_client):
    zone = dynamic_zone()
    Meter.objects.create(name="Incomer", host="10.0.0.5", role="zone_total", zone=zone)
    Meter.objects.filter(name="Incomer").update(last_error="iem3x5x tcp 10.0.0.5:502 unit 1: cannot connect",
                                                consecutive_failures=7)
    page = admin_client.get(CHANGELIST).content.decode()
    for text in ("Incomer", "10.0.0.5:502 unit 1", "Zone total consumption", "Car park", "cannot connect", ">7<"):
        assert text in page


def test_history_csv_export(admin_client):
    zone = dynamic_zone()
    incomer = Meter.objects.create(name="=Incomer", host="h", role="zone_total", zone=zone)
    other = Meter.objects.create(name="Tag", host="h")
    MeterReading.objects.create(meter=incomer, start=T0, samples=12, power_w=21060.25, current_l1_a=31.5,
                                energy_import_wh=123456789.0)
    MeterReading.objects.create(meter=incomer, start=at(60), samples=11, power_w=20000.0)
    MeterReading.objects.create(meter=other, start=T0, samples=1, power_w=1.0)

    response = run_action(admin_client, "export_history_csv", [incomer])

    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["meter"], r["minute_start_utc"], r["samples"]) for r in rows] == [
        ("'=Incomer", "2026-01-05T12:00:00Z", "12"), ("'=Incomer", "2026-01-05T12:01:00Z", "11")]
    assert (rows[0]["role"], rows[0]["zone"], rows[0]["power_w"], rows[0]["current_l1_a"]) == (
        "zone_total", "Car park", "21060.25", "31.5")
    assert (rows[0]["energy_import_wh"], rows[0]["current_l2_a"]) == ("123456789.0", "")


def test_history_admin_is_read_only_with_filters_and_exports(admin_client):
    meter = Meter.objects.create(name="Incomer", host="h", role="monitor")
    reading = MeterReading.objects.create(meter=meter, start=T0, samples=3, power_w=5.0)
    url = "/admin/meters/meterreading/"
    assert admin_client.get(url, {"meter__role": "monitor"}).status_code == 200
    assert admin_client.get(f"{url}add/").status_code == 403
    response = run_action(admin_client, "export_csv", [reading], url=url)
    assert b"".join(response.streaming_content).decode().count("\n") == 2


def add_form(**overrides: str) -> dict[str, str]:
    form = {
        "name": "Sub-board", "enabled": "on", "role": "monitor", "zone": "", "meter_type": "generic",
        "register_spec": "{}", "word_order": "", "transport": "tcp", "host": "10.0.0.7", "port": "502",
        "serial_device": "", "baudrate": "19200", "parity": "E", "stopbits": "1", "unit_id": "1",
        "timeout_s": "2", "poll_period_s": "5", "history_retention_days": "30",
    }
    form.update(overrides)
    return form


@pytest.mark.parametrize(("spec", "message"), [
    ('{"power_w": {"register": 3060}}', "power_w: data_type is required"),
    ('{"power_kw": {"register": 3060, "data_type": "float32"}}', "unknown quantity &#x27;power_kw&#x27;"),
    ('{"power_w": {"register": 3060, "data_type": "float64"}}', "unknown data type &#x27;float64&#x27;"),
    ('{"power_w": {"register": 3060, "address": 3059, "data_type": "float32"}}', "give exactly one of"),
    ('{"power_w": {"register": 3060, "data_type": "float32", "scale": 0}}', "scale must be finite and non-zero"),
    ("{}", "give at least one quantity"),
    ('{"power_w": [3060]}', "expected an object with address and data_type"),
    ("{power_w: 3060", "Enter a valid JSON"),
])
def test_generic_register_list_errors_are_shown_in_the_form(admin_client, spec, message):
    response = admin_client.post(f"{CHANGELIST}add/", add_form(register_spec=spec))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Meter.objects.exists()


def test_a_valid_generic_meter_is_saved(admin_client):
    spec = '{"power_w": {"register": 3060, "data_type": "float32", "scale": 1000, "unit": "kW"}}'
    response = admin_client.post(f"{CHANGELIST}add/", add_form(register_spec=spec))
    assert response.status_code == 302
    assert Meter.objects.get().register_map().register_for("power_w").scale == 1000


def test_editing_a_meter_keeps_its_status_and_disabling_a_pv_meter_clears_its_production(admin_client):
    zone = dynamic_zone(add_pv_production=True)
    zone_record_measurement(zone=zone, at=at(0), current_a=(10.0, 10.0, 10.0), pv_power_kw=5.0)
    meter = Meter.objects.create(name="Roof PV", host="10.0.0.8", role="pv", zone=zone)
    Meter.objects.filter(pk=meter.pk).update(last_reading_at=at(0), last_values={"power_w": 5000.0}, stale=False)

    form = add_form(name="Roof PV", role="pv", zone=str(zone.pk), meter_type="pm5300", host="10.0.0.8")
    del form["enabled"]
    response = admin_client.post(f"{CHANGELIST}{meter.pk}/change/", form)

    assert response.status_code == 302
    meter.refresh_from_db()
    assert (meter.enabled, meter.meter_type, meter.last_reading_at, meter.last_values) == (
        False, "pm5300", at(0), {"power_w": 5000.0})
    zone.refresh_from_db()
    assert (zone.pv_power_kw, zone.measured_at) == (0.0, at(0))
