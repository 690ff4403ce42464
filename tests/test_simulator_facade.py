"""The synchronous Site façade, as a loop scenario test would drive it (against the mini central system)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from simulator import CarSpec, ChargerSpec, Site, Zone
from simulator.central import MiniCentral, tx_default_profile, tx_profile

pytestmark = pytest.mark.slow

class CentralThread:
    """The mini central system in its own loop, so the test (and the Site) stay synchronous."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = MiniCentral()
        self.url = self.run(self.server.start())

    def run(self, coroutine):  # noqa: ANN001, ANN201 - test helper
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def central() -> Iterator[CentralThread]:
    server = CentralThread()
    yield server
    server.close()


ZONES = [Zone("root", capacity_a=63), Zone("dyn", parent="root", capacity_a=40, dynamic=True)]


def test_it_drives_a_site_and_reports_a_building_step_nobody_reacted_to(central):
    with Site(central.url, zones=ZONES, reaction_grace_s=0.3, new_session_grace_s=0.2, tick_s=0.05) as site:
        site.add_charger(ChargerSpec("A"), zone_id="dyn")
        site.add_charger(ChargerSpec("B", phases=1, supply_phase="L3"), zone_id="dyn")
        site.add_meter("dyn", building_a=(5.0, 5.0, 5.0), lag_s=0.5)
        site.start(timeout_s=10)
        for cp_id in ("A", "B"):
            assert central.run(central.server.set_profile(cp_id, 0, tx_default_profile(16))) == "Accepted"
        tx_a = site.arrive("A", car=CarSpec(response_delay_s=0.1))
        site.arrive("B", car=CarSpec(phases=1, response_delay_s=0.1))
        assert site.transaction_id("A") == tx_a
        central.run(central.server.set_profile("A", 1, tx_profile(16, transaction_id=tx_a)))
        site.wait_until(lambda: site.charger("A").connectors[1].current_a == 16, timeout_s=3)
        assert site.meter_port > 0
        site.assert_clean()  # 5 + 16 + 16 on L3 = 37 <= 40

        site.set_building("dyn", (20.0, 20.0, 20.0))  # capacity left: 20 A, held 32 A on L3
        site.wait_until(lambda: site.report().breaches, timeout_s=3)
        report = site.report()
        assert {(b.zone_id, b.quantity) for b in report.breaches} == {("dyn", "L3")}
        assert report.tolerated_samples > 0  # the first 0.3 s were the controller's to react
        assert len(report.tx_profile_latency_s) == 1
        with pytest.raises(AssertionError, match="zone dyn L3"):
            site.assert_clean()


def test_it_tells_the_checker_about_a_time_of_use_drop(central):
    with Site(central.url, zones=[Zone("root", capacity_a=63)], reaction_grace_s=0.2,
              new_session_grace_s=0.0) as site:
        site.add_charger(ChargerSpec("T"), zone_id="root")
        site.start(timeout_s=10)
        site.arrive("T")
        site.set_zone_capacity("root", capacity_a=20)
        site.wait_until(lambda: site.report().breaches, timeout_s=3)
        assert site.report().breaches[0].holders_at_worst == [("T", 1, 32.0)]
