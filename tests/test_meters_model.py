"""Meter configuration rules: what the admin refuses, and the time rules (on unsaved meters)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from meters.models import Meter
from tests.meters_lab import at, dynamic_zone


def test_it_is_due_after_its_period_and_stale_after_the_max_age():
    meter = Meter(name="m", host="h", poll_period_s=5, last_poll_at=at(0), last_reading_at=at(0))
    assert not meter.is_due(at(4))
    assert meter.is_due(at(5))
    assert not Meter(name="m", host="h", enabled=False).is_due(at(0))
    assert not meter.is_stale(at(60), max_age_s=60)
    assert meter.is_stale(at(61), max_age_s=60)
    assert Meter(name="m", host="h").is_stale(at(0), max_age_s=60)  # never read


def test_it_builds_the_modbus_config():
    meter = Meter(name="m", meter_type="powertag", transport="rtu_over_tcp", host="10.0.0.9", port=503, unit_id=150,
                  timeout_s=1.5, word_order="little")
    config = meter.to_config()
    assert (config.register_map.key, config.transport, config.host, config.port, config.unit_id) == (
        "powertag", "rtu_over_tcp", "10.0.0.9", 503, 150)
    assert (config.timeout_s, config.word_order) == (1.5, "little")
    assert meter.address == "10.0.0.9:503 unit 150"


def errors_of(meter: Meter) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        meter.full_clean()
    return caught.value.message_dict


@pytest.mark.django_db
def test_it_refuses_incomplete_connections_and_roles():
    assert "host" in errors_of(Meter(name="m"))
    assert "serial_device" in errors_of(Meter(name="m", transport="rtu_serial"))
    assert "unit_id" in errors_of(Meter(name="m", transport="rtu_serial", serial_device="/dev/ttyUSB0", unit_id=0))
    assert "zone" in errors_of(Meter(name="m", host="h", role="zone_total"))
    assert "register_spec" in errors_of(Meter(name="m", host="h", register_spec={"power_w": {"address": 1}}))


@pytest.mark.django_db
def test_a_zone_has_one_enabled_consumption_meter_and_one_pv_meter():
    zone = dynamic_zone()
    Meter.objects.create(name="Incomer", host="h", role="zone_total", zone=zone)
    second = Meter(name="Second", host="h", role="zone_total", zone=zone)
    assert "already has an enabled" in errors_of(second)["role"][0]
    Meter(name="Spare", host="h", role="zone_total", zone=zone, enabled=False).full_clean()
    Meter(name="EV", host="h", role="ev_submeter", zone=zone).full_clean()


@pytest.mark.django_db
def test_a_generic_meter_must_provide_what_its_role_needs():
    zone = dynamic_zone()
    spec = {"voltage_l1_v": {"register": 3028, "data_type": "float32"}}
    meter = Meter(name="g", host="h", meter_type="generic", register_spec=spec, role="pv", zone=zone)
    assert "must provide the total power" in errors_of(meter)["__all__"][0]
    meter.register_spec = {"power_w": {"register": 3060, "data_type": "float32", "scale": 1000}}
    meter.full_clean()
    assert meter.register_map().register_for("power_w").address == 3059


@pytest.mark.django_db
def test_a_zone_meter_must_measure_what_the_zone_limits():
    zone = dynamic_zone(max_current_a=63.0, max_power_kw=40.0)
    power_only = {"power_w": {"register": 3060, "data_type": "float32", "scale": 1000}}
    meter = Meter(name="g", host="h", meter_type="generic", register_spec=power_only, role="zone_total", zone=zone)
    assert "must provide the three currents" in errors_of(meter)["__all__"][0]
    currents = {q: {"register": 3000 + 2 * n, "data_type": "float32"}
                for n, q in enumerate(("current_l1_a", "current_l2_a", "current_l3_a"))}
    meter.register_spec = currents
    assert "must provide the total power" in errors_of(meter)["__all__"][0]
    meter.register_spec = currents | power_only
    meter.full_clean()
