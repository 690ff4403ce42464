"""Boot storms: a listen backlog for thousands, configuration skipped when it already holds, jitter,
configuration deferred until a storm's boots stop."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chargers import consumers
from chargers.consumers import STORM_BOOTS, boot_jitter_s, storm_wait_s
from chargers.models import AutoConfigurationKey, Charger, ConfigurationKey, RegistrationStatus
from evce.launcher import daphne_endpoint
from loadmgmt.models import Zone
from tests.conftest import wait_until
from tests.ocpp_sim import ChargerSim


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


def test_configuration_waits_for_a_storms_boots_to_stop_and_never_past_its_cap():
    storm = STORM_BOOTS
    assert storm_wait_s(now=10.0, last_boot_at=9.9, booting=storm - 1, quiet_s=1.0, until=40.0) == 0  # no storm
    assert storm_wait_s(now=10.0, last_boot_at=9.5, booting=storm, quiet_s=1.0, until=40.0) == pytest.approx(0.5)
    assert storm_wait_s(now=10.0, last_boot_at=8.9, booting=storm, quiet_s=1.0, until=40.0) == 0  # quiet for 1.1 s
    assert storm_wait_s(now=10.0, last_boot_at=9.9, booting=storm, quiet_s=1.0, until=10.2) == pytest.approx(0.2)
    assert storm_wait_s(now=10.0, last_boot_at=9.9, booting=storm, quiet_s=1.0, until=9.0) == 0  # capped
    assert storm_wait_s(now=10.0, last_boot_at=9.9, booting=10 * storm, quiet_s=0.0, until=40.0) == 0  # turned off


def test_a_storms_configuration_starts_once_boots_have_stopped_for_the_quiet_period(settings, monkeypatch):
    settings.OCPP_BOOT_QUIET_MS = 300
    settings.OCPP_BOOT_JITTER_MAX_S = 30
    monkeypatch.setattr(consumers, "_booting", STORM_BOOTS + 5)

    async def storm_then_configuration() -> tuple[float, float]:
        began = time.monotonic()
        waiting = asyncio.ensure_future(consumers._quiet_after_boot_storm())
        for _ in range(8):  # a boot every 0.1 s for 0.8 s
            monkeypatch.setattr(consumers, "_last_boot_at", time.monotonic())
            await asyncio.sleep(0.1)
            assert not waiting.done()
        last_boot = consumers._last_boot_at
        await waiting
        return last_boot - began, time.monotonic() - began

    last_boot_s, done_s = asyncio.run(storm_then_configuration())
    assert done_s >= last_boot_s + 0.3  # not before the boots had stopped for the quiet period
    assert done_s < last_boot_s + 3.0


def test_a_storm_that_goes_on_defers_configuration_no_longer_than_the_cap(settings, monkeypatch):
    settings.OCPP_BOOT_QUIET_MS = 60_000
    settings.OCPP_BOOT_JITTER_MAX_S = 1
    monkeypatch.setattr(consumers, "_booting", STORM_BOOTS)
    monkeypatch.setattr(consumers, "_last_boot_at", time.monotonic())
    began = time.monotonic()
    asyncio.run(consumers._quiet_after_boot_storm())
    assert 0.9 <= time.monotonic() - began < 3.0


CONFIGURATION_CALLS = {"GetConfiguration", "ChangeConfiguration", "SendLocalList", "GetLocalListVersion"}


def test_in_a_real_storm_the_safe_default_goes_at_once_and_configuration_after_the_quiet(
        servers, transactional_db, charger_factory):
    """A Daphne process, STORM_BOOTS + 4 chargers booting together: each gets its safe default
    first and its configuration only once no charger has booted for OCPP_BOOT_QUIET_MS."""
    quiet_s = 3.0
    url = servers.daphne(OCPP_BOOT_QUIET_MS=str(int(quiet_s * 1000)), OCPP_BOOT_JITTER_MAX_S="30")
    AutoConfigurationKey.objects.all().delete()
    AutoConfigurationKey.objects.create(key="MeterValueSampleInterval", value="10")
    zone = Zone.objects.create(name="Storm site", max_current_a=400)
    names = [f"CP-STORM-{n:02d}" for n in range(STORM_BOOTS + 4)]
    Charger.objects.bulk_create([Charger(charge_point_id=name, registration_status=RegistrationStatus.ACCEPTED,
                                         zone=zone) for name in names])
    sims: list[ChargerSim] = [charger_factory(url, name).connect() for name in names]
    for sim in sims:
        # The safe default's answer takes a second: every boot is in before any charger's
        # configuration steps look for a storm, so each of them sees one.
        sim.cp.delays["SetChargingProfile"] = 1.0

    def boot(sim: ChargerSim) -> float:
        sent_at = time.monotonic()
        sim.boot()
        return sent_at

    with ThreadPoolExecutor(len(sims)) as pool:
        last_boot_sent = max(pool.map(boot, sims))
    wait_until(lambda: all(CONFIGURATION_CALLS & {action for action, _ in list(sim.cp.arrived)} for sim in sims),
               timeout_s=30)
    for sim in sims:
        arrived = list(sim.cp.arrived)
        actions = [action for action, _ in arrived]
        first_configuration = next(i for i, action in enumerate(actions) if action in CONFIGURATION_CALLS)
        assert "SetChargingProfile" in actions[:first_configuration]  # the safe default did not wait
        assert arrived[first_configuration][1] >= last_boot_sent + quiet_s  # configuration waited for the quiet
