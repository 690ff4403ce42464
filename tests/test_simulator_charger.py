"""The simulated charger's behaviours, against the minimal in-process central system."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from simulator import AsyncSite, CarSpec, ChargerSpec, Zone
from simulator.central import MiniCentral, tx_default_profile, tx_profile

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


@pytest_asyncio.fixture
async def central() -> AsyncIterator[MiniCentral]:
    server = MiniCentral()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def make_site(central: MiniCentral) -> AsyncIterator[Callable[..., Awaitable[AsyncSite]]]:
    sites: list[AsyncSite] = []

    async def make(*specs: ChargerSpec, zones: list[Zone] | None = None, **options: Any) -> AsyncSite:
        site = AsyncSite(central.url, zones=zones or [Zone("root", capacity_a=100)], tick_s=0.05, **options)
        for spec in specs:
            site.add_charger(spec, zone_id="root")
        await site.start(timeout_s=20)
        sites.append(site)
        return site

    yield make
    for site in sites:
        await site.stop()


async def eventually(predicate: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.02)
    return value


async def test_it_holds_the_profiles_it_accepts(central, make_site):
    site = await make_site(ChargerSpec("N1"))
    charger = site.chargers["N1"]
    assert await central.set_profile("N1", 0, tx_default_profile(16)) == "Accepted"
    assert charger.limit_a() == 16
    assert await central.set_profile("N1", 1, tx_profile(10)) == "Rejected"  # no transaction yet
    tx = await site.arrive("N1", car=CarSpec(response_delay_s=0.1))
    assert await central.set_profile("N1", 1, tx_profile(10, transaction_id=tx)) == "Accepted"
    assert charger.limit_a() == 10
    await eventually(lambda: charger.connectors[1].current_a == 10)
    events = charger.profile_events()
    assert [(e.purpose, e.status) for e in events] == [
        ("TxDefaultProfile", "Accepted"), ("TxProfile", "Rejected"), ("TxProfile", "Accepted")]
    await site.leave("N1")
    assert charger.limit_a() == 16  # the TxProfile died with its transaction
    assert central.actions("N1", "StopTransaction")[0]["transaction_id"] == tx


async def test_it_reports_meter_values_with_phase_labels_power_and_energy(central, make_site):
    site = await make_site(ChargerSpec("M1", phases=1, supply_phase="L2", meter_interval_s=0.2))
    await site.arrive("M1", car=CarSpec(max_current_a=16, phases=1, response_delay_s=0.0))
    sample = await eventually(lambda: [m for m in central.actions("M1", "MeterValues")
                                       if float(m["meter_value"][0]["sampled_value"][0]["value"]) > 0])
    values = {(v["measurand"], v.get("phase")): v for v in sample[-1]["meter_value"][0]["sampled_value"]}
    # Single phase wired to L2, but it reports its own phase: "L1".
    assert values[("Current.Import", "L1")]["value"] == "16.0"
    assert values[("Power.Active.Import", None)]["value"] == "3680"
    assert values[("Energy.Active.Import.Register", None)]["unit"] == "Wh"
    assert site.chargers["M1"].supply_currents_a() == (0.0, 16.0, 0.0)


async def test_a_slow_charger_answers_late_and_applies_the_profile_then(central, make_site):
    site = await make_site(ChargerSpec("S1", behaviour="slow", answer_delay_s=0.5))
    started = time.monotonic()
    assert await central.set_profile("S1", 0, tx_default_profile(8)) == "Accepted"
    assert time.monotonic() - started >= 0.5
    event = site.chargers["S1"].profile_events(0)[0]
    assert event.answered_s - event.received_s >= 0.5


async def test_a_silent_charger_never_answers_but_keeps_reporting(central, make_site):
    site = await make_site(ChargerSpec("Q1", behaviour="silent", meter_interval_s=0.2))
    await site.arrive("Q1")  # its own calls still work
    with pytest.raises(TimeoutError):
        await central.set_profile("Q1", 1, tx_profile(6))
    event = site.chargers["Q1"].profile_events(1)[0]
    assert (event.status, event.answered_s) == (None, None)
    count = len(central.actions("Q1", "MeterValues"))
    await eventually(lambda: len(central.actions("Q1", "MeterValues")) > count)


async def test_a_rejecting_charger_rejects_every_profile(central, make_site):
    site = await make_site(ChargerSpec("R1", behaviour="rejecting"))
    assert await central.set_profile("R1", 0, tx_default_profile(8)) == "Rejected"
    assert site.chargers["R1"].limit_a() == 32


async def test_a_w_only_charger_refuses_amps_and_converts_watts(central, make_site):
    site = await make_site(ChargerSpec("W1", rate_units="Power"))
    assert await central.set_profile("W1", 0, tx_default_profile(16)) == "Rejected"
    assert await central.set_profile("W1", 0, tx_default_profile(6900, unit="W")) == "Accepted"
    assert site.chargers["W1"].limit_a() == pytest.approx(10.0)
    assert site.chargers["W1"].config["ChargingScheduleAllowedChargingRateUnit"] == "Power"


async def test_a_vanishing_charger_drops_the_link_mid_call_and_comes_back(central, make_site):
    site = await make_site(ChargerSpec("V1", behaviour="vanishing", reconnect_after_s=0.3))
    charger = site.chargers["V1"]
    tx = await site.arrive("V1")
    with pytest.raises(Exception):  # noqa: B017 - the link is gone: closed or timed out
        await central.set_profile("V1", 1, tx_profile(6, transaction_id=tx))
    assert charger.profile_events(1)[0].status == "Dropped"
    await site.leave("V1")  # offline: StopTransaction is queued
    await eventually(lambda: central.actions("V1", "StopTransaction"), timeout_s=5)
    assert charger.disconnects == 1


async def test_a_refused_start_is_stopped_at_once(central, make_site):
    central.start_status["BLOCKED"] = "Blocked"
    site = await make_site(ChargerSpec("B1"))
    assert await site.arrive("B1", id_tag="BLOCKED") is None
    stop = central.actions("B1", "StopTransaction")[0]
    assert stop["reason"] == "DeAuthorized"
    assert site.chargers["B1"].transaction_id() is None


async def test_a_dual_socket_charger_shares_its_charge_point_max(central, make_site):
    site = await make_site(ChargerSpec("D1", connectors=2))
    maximum = tx_default_profile(32, profile_id=1)
    maximum["chargingProfilePurpose"] = "ChargePointMaxProfile"
    assert await central.set_profile("D1", 0, maximum) == "Accepted"
    await site.arrive("D1", 1)
    await site.arrive("D1", 2)
    assert site.chargers["D1"].held_limits_a() == {1: 16.0, 2: 16.0}


async def test_the_checker_sees_a_charger_holding_more_than_its_zone(central, make_site):
    site = await make_site(ChargerSpec("C1"), ChargerSpec("C2"), zones=[Zone("root", capacity_a=40)],
                           new_session_grace_s=0.2)
    await asyncio.gather(central.set_profile("C1", 0, tx_default_profile(20)),
                         central.set_profile("C2", 0, tx_default_profile(20)))
    await site.arrivals(["C1", "C2"])
    tx = site.chargers["C1"].transaction_id()
    await central.set_profile("C1", 1, tx_profile(32, transaction_id=tx))  # 32 + 20 > 40
    await asyncio.sleep(0.4)  # C2's grace (0.2 s without a TxProfile) runs out
    assert site.checker is not None
    report = site.checker.report()
    assert {(b.zone_id, b.quantity) for b in report.breaches} == {("root", "L1"), ("root", "L2"), ("root", "L3")}
    assert report.breaches[0].holders_at_worst[0] == ("C1", 1, 32.0)
    assert len(report.tx_profile_latency_s) == 1


async def test_it_runs_250_chargers_in_one_loop(central):
    site = AsyncSite(central.url, zones=[Zone("root", capacity_a=10_000)], tick_s=0.5)
    for n in range(250):
        site.add_charger(ChargerSpec(f"F{n:03}", meter_interval_s=60), zone_id="root")
    try:
        started = time.monotonic()
        await site.start(timeout_s=60)
        assert len(central.points) == 250
        await site.arrivals([f"F{n:03}" for n in range(0, 250, 5)])
        assert sum(1 for c in site.chargers.values() if c.transaction_id() is not None) == 50
        assert time.monotonic() - started < 30
    finally:
        await site.stop()


async def test_a_w_profile_for_three_phases_lets_a_single_phase_car_take_three_times_the_current(central, make_site):
    site = await make_site(ChargerSpec("W3", rate_units="Power"))
    assert await central.set_profile("W3", 0, tx_default_profile(6900, unit="W", phases=3)) == "Accepted"
    await site.arrive("W3", car=CarSpec(phases=1, response_delay_s=0.0))
    assert site.chargers["W3"].limit_a() == pytest.approx(30.0)
    holding = site.holdings()[0]
    assert holding.phases_a == pytest.approx((30.0, 0.0, 0.0))  # the car loads the charger's L1 only
    assert holding.power_w == pytest.approx(6900.0)
    site.count_all_charger_phases = True
    assert site.holdings()[0].phases_a == pytest.approx((30.0, 30.0, 30.0))


async def test_a_vanishing_charger_can_drop_at_a_given_time_and_stay_away(central, make_site):
    site = await make_site(ChargerSpec("V2", behaviour="vanishing", vanish_at_s=0.2, vanish_on=None))
    charger = site.chargers["V2"]
    tx = await site.arrive("V2", car=CarSpec(response_delay_s=0.0))
    await eventually(lambda: not charger.online.is_set())
    await asyncio.sleep(0.2)
    # Offline, the car keeps charging at the last limit and the charger keeps its transaction.
    assert charger.transaction_id() == tx
    assert charger.connectors[1].current_a == 32


async def test_a_vanishing_charger_behaves_after_its_vanish_times(central, make_site):
    site = await make_site(ChargerSpec("V3", behaviour="vanishing", reconnect_after_s=0.1, vanish_times=1))
    with pytest.raises(Exception):  # noqa: B017 - dropped mid-call
        await central.set_profile("V3", 0, tx_default_profile(10))
    await eventually(lambda: site.chargers["V3"].online.is_set() and central.points["V3"].id)
    await eventually(lambda: len(central.actions("V3", "StatusNotification")) >= 3)
    assert await central.set_profile("V3", 0, tx_default_profile(10)) == "Accepted"
