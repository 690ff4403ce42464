"""Boot storms: a listen backlog for thousands, configuration skipped when it already holds, jitter."""

from __future__ import annotations

from chargers.consumers import boot_jitter_s
from chargers.models import AutoConfigurationKey, Charger, ConfigurationKey, RegistrationStatus
from evce.launcher import daphne_endpoint
from tests.conftest import wait_until


def test_it_skips_the_configuration_a_charger_already_holds(ocpp_url, charger_factory):
    AutoConfigurationKey.objects.all().delete()
    AutoConfigurationKey.objects.create(key="MeterValueSampleInterval", value="10")
    charger = Charger.objects.create(charge_point_id="CP-SAME", registration_status=RegistrationStatus.ACCEPTED)
    ConfigurationKey.objects.create(charger=charger, key="MeterValueSampleInterval", value="10")
    sim = charger_factory(ocpp_url, "CP-SAME").connect()
    sim.cp.config["MeterValueSampleInterval"] = "10"
    sim.boot()
    wait_until(lambda: any(action == "GetConfiguration" for action, _ in list(sim.cp.received)))
    asked = [payload for action, payload in list(sim.cp.received) if action == "GetConfiguration"]
    assert asked == [{"key": ["MeterValueSampleInterval"]}]
    assert not any(action == "ChangeConfiguration" for action, _ in list(sim.cp.received))


def test_it_sets_what_the_charger_lost_since_it_was_read(ocpp_url, charger_factory):
    AutoConfigurationKey.objects.all().delete()
    AutoConfigurationKey.objects.create(key="MeterValueSampleInterval", value="10")
    charger = Charger.objects.create(charge_point_id="CP-RESET", registration_status=RegistrationStatus.ACCEPTED)
    ConfigurationKey.objects.create(charger=charger, key="MeterValueSampleInterval", value="10")
    sim = charger_factory(ocpp_url, "CP-RESET").connect()
    sim.cp.config["MeterValueSampleInterval"] = "60"  # a factory reset, say
    sim.boot()
    wait_until(lambda: sim.cp.config["MeterValueSampleInterval"] == "10")


def test_the_jitter_grows_with_the_boots_in_progress_up_to_its_cap(settings):
    settings.OCPP_BOOT_JITTER_MAX_S = 5
    assert 0 <= boot_jitter_s(1) <= 0.02
    assert max(boot_jitter_s(1000) for _ in range(200)) > 2
    assert all(boot_jitter_s(100_000) <= 5 for _ in range(200))


def test_daphne_listens_with_a_large_backlog():
    assert daphne_endpoint("0.0.0.0", 8000, 4096) == "tcp:port=8000:interface=0.0.0.0:backlog=4096"  # noqa: S104
    assert daphne_endpoint("::", 8000, 4096) == "tcp:port=8000:interface=\\:\\::backlog=4096"
