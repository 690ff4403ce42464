"""Boot storms: a listen backlog for thousands, configuration skipped when it already holds, jitter,
configuration deferred until a storm's boots stop."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chargers import consumers
from chargers.bootqueue import STORM_BOOTS, DeferredBootSteps, StormState, boot_jitter_s, storm_wait_s
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


def test_the_jitter_grows_with_the_boots_in_progress_up_to_its_cap():
    assert 0 <= boot_jitter_s(1, 5) <= 0.02
    assert max(boot_jitter_s(1000, 5) for _ in range(200)) > 2
    assert all(boot_jitter_s(100_000, 5) <= 5 for _ in range(200))


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


class Storm:
    """The process's boots as the queue reads them, set by a test."""

    def __init__(self, *, booting: int, quiet_s: float, jitter_max_s: float) -> None:
        self.booting, self.last_boot_at = booting, time.monotonic()
        self.quiet_s, self.jitter_max_s = quiet_s, jitter_max_s

    def state(self) -> StormState:
        return StormState(booting=lambda: self.booting, last_boot_at=lambda: self.last_boot_at,
                          quiet_s=lambda: self.quiet_s, jitter_max_s=lambda: self.jitter_max_s)


def started_queue(storm: Storm) -> tuple[DeferredBootSteps[str], dict[str, float]]:
    started: dict[str, float] = {}
    return DeferredBootSteps(lambda name: started.setdefault(name, time.monotonic()), storm.state()), started


def test_a_storms_configuration_starts_once_boots_have_stopped_for_the_quiet_period():
    storm = Storm(booting=STORM_BOOTS + 5, quiet_s=0.3, jitter_max_s=30)

    async def storm_then_configuration() -> tuple[float, dict[str, float]]:
        queue, started = started_queue(storm)
        for name in ("a", "b", "c"):
            queue.add(name)
        for _ in range(8):  # a boot every 0.1 s for 0.8 s
            storm.last_boot_at = time.monotonic()
            await asyncio.sleep(0.1)
            assert not started
        while len(queue):
            await asyncio.sleep(0.05)
        return storm.last_boot_at, started

    last_boot_at, started = asyncio.run(storm_then_configuration())
    assert set(started) == {"a", "b", "c"}
    for started_at in started.values():
        assert started_at >= last_boot_at + 0.3  # not before the boots had stopped for the quiet period
        assert started_at < last_boot_at + 0.3 + (STORM_BOOTS + 5) * 0.02 + 1.0  # then within its jitter


def test_a_storm_that_goes_on_defers_configuration_no_longer_than_the_cap():
    storm = Storm(booting=STORM_BOOTS, quiet_s=60, jitter_max_s=1)

    async def endless_storm() -> float:
        queue, started = started_queue(storm)
        began = time.monotonic()
        queue.add("a")
        while not started:
            storm.last_boot_at = time.monotonic()
            await asyncio.sleep(0.05)
        return started["a"] - began

    assert 0.9 <= asyncio.run(endless_storm()) < 3.0


def test_the_waiting_chargers_hold_one_task_between_them_not_one_each():
    storm = Storm(booting=STORM_BOOTS + 500, quiet_s=5, jitter_max_s=30)

    async def many_waiting() -> int:
        queue, _ = started_queue(storm)
        for number in range(500):
            queue.add(f"CP-{number}")
        await asyncio.sleep(0.05)
        tasks = len(asyncio.all_tasks()) - 1  # this test's own
        assert len(queue) == 500
        return tasks

    assert asyncio.run(many_waiting()) == 1


def test_outside_a_storm_a_charger_goes_at_once_even_while_others_wait_their_long_jitter():
    storm = Storm(booting=1000, quiet_s=0, jitter_max_s=30)  # a jitter of up to 20 s for the first

    async def one_after_a_storm() -> tuple[dict[str, float], float]:
        queue, started = started_queue(storm)
        queue.add("in-the-storm")
        await asyncio.sleep(0.05)
        storm.booting = 1  # the storm is over: a lone boot's jitter is at most 20 ms
        added_at = time.monotonic()
        queue.add("alone")
        while "alone" not in started:
            await asyncio.sleep(0.01)
            assert time.monotonic() - added_at < 2
        return started, added_at

    started, added_at = asyncio.run(one_after_a_storm())
    assert started["alone"] - added_at < 0.5


def test_a_dropped_charger_never_starts_and_the_others_do():
    storm = Storm(booting=STORM_BOOTS, quiet_s=0.2, jitter_max_s=1)

    async def drop_one() -> tuple[dict[str, float], bool, bool]:
        queue, started = started_queue(storm)
        queue.add("gone")
        assert queue.add("stays") and not queue.add("stays")  # queued once
        dropped, dropped_again = queue.drop("gone"), queue.drop("gone")
        while len(queue):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        return started, dropped, dropped_again

    started, dropped, dropped_again = asyncio.run(drop_one())
    assert set(started) == {"stays"} and dropped and not dropped_again


class _Steps:
    """A charger's boot steps as registered by the apps: one urgent, one deferred."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    async def urgent(self, call: object, charger_pk: int) -> None:
        self.ran.append("urgent")

    async def configure(self, call: object, charger_pk: int) -> None:
        self.ran.append("configure")


def test_a_consumer_runs_its_urgent_steps_at_once_and_queues_the_others(settings, monkeypatch):
    settings.OCPP_BOOT_QUIET_MS = 0
    steps = _Steps()
    monkeypatch.setattr(consumers, "BOOT_ACCEPTED_STEPS", [steps.urgent, steps.configure])
    monkeypatch.setattr(consumers, "URGENT_BOOT_STEPS", {steps.urgent})
    booting_before = consumers._booting

    async def boot() -> tuple[list[str], int]:
        consumer = consumers.OcppConsumer()
        consumer.charger_pk = 1
        await consumer._run_boot_steps()
        seen_right_after = list(steps.ran)
        booting_while_queued = consumers._booting
        while len(consumers.deferred_boot_steps()) or consumer._tasks:
            await asyncio.sleep(0.01)
        assert steps.ran == ["urgent", "configure"]
        return seen_right_after, booting_while_queued

    seen_right_after, booting_while_queued = asyncio.run(boot())
    assert seen_right_after == ["urgent"]
    assert booting_while_queued == booting_before + 1  # a queued charger counts as booting
    assert consumers._booting == booting_before


def test_a_consumer_gone_while_its_steps_wait_is_no_longer_booting(settings, monkeypatch):
    settings.OCPP_BOOT_QUIET_MS = 60_000
    settings.OCPP_BOOT_JITTER_MAX_S = 60
    steps = _Steps()
    monkeypatch.setattr(consumers, "BOOT_ACCEPTED_STEPS", [steps.urgent, steps.configure])
    monkeypatch.setattr(consumers, "URGENT_BOOT_STEPS", {steps.urgent})
    monkeypatch.setattr(consumers, "_booting", STORM_BOOTS)  # a storm: the steps wait for its quiet
    monkeypatch.setattr(consumers, "_last_boot_at", time.monotonic())

    async def boot_then_leave() -> int:
        consumer = consumers.OcppConsumer()
        consumer.charger_pk = 1
        await consumer._run_boot_steps()
        await consumer._run_boot_steps()  # booted again while its steps wait: still one in the queue
        queued = len(consumers.deferred_boot_steps())
        consumer.charger_pk = None  # nothing to record of it
        await consumer.disconnect(1006)
        assert len(consumers.deferred_boot_steps()) == 0
        return queued

    assert asyncio.run(boot_then_leave()) == 1
    assert consumers._booting == STORM_BOOTS and steps.ran == ["urgent", "urgent"]


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
