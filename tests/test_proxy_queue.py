"""Backends that go away: the durable queue, replay in order, a controller restart, clear statuses."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from django.core.exceptions import ValidationError
from ocpp.v16 import call

from badges.models import Badge
from chargers.models import Charger, RegistrationStatus
from proxy.models import QueuedMessage, Role, TransactionIdMap, UpstreamBackend, UpstreamLink
from tests.conftest import BASE_DIR, wait_for_port, wait_until
from tests.embedded_services import free_port
from tests.ocpp_sim import utc_iso
from tests.proxy_cpo import FakeCpo
from tests.test_proxy_links import meter_value

pytestmark = pytest.mark.slow


class Daphne:
    """A Daphne of this test's own, so that it can be stopped and started again (a restart)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> str:
        port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "evce.asgi:application"],
            cwd=BASE_DIR, env=self.env)
        wait_for_port(port, self.process)
        self.url = f"ws://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None


@pytest.fixture
def daphne(servers, transactional_db):
    server = Daphne(servers.env)
    yield server
    server.stop()


@pytest.fixture
def cpo():
    backend = FakeCpo(first_tx_id=1000)
    yield backend
    backend.close()


def link_to(cpo: FakeCpo, cp_id: str, **options) -> UpstreamLink:
    charger = Charger.objects.create(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED)
    backend = UpstreamBackend.objects.create(name=f"CPO {cp_id}", url=options.pop("url", cpo.url),
                                             message_timeout_s=2, transaction_message_retry_interval_s=0, **options)
    return UpstreamLink.objects.create(charger=charger, backend=backend, role=Role.PRIMARY)


def is_connected(link: UpstreamLink, value: bool = True) -> bool:
    return UpstreamLink.objects.filter(pk=link.pk, connected=value).exists()


def test_queued_transactions_are_replayed_in_order_after_a_backend_outage_and_a_restart(daphne, cpo,
                                                                                         charger_factory):
    link = link_to(cpo, "CP-Q")
    Badge.objects.create(id_tag="DRIVER")
    url = daphne.start()
    sim = charger_factory(url, "CP-Q").connect()
    sim.boot()
    wait_until(lambda: is_connected(link))
    cpo.stop()
    wait_until(lambda: is_connected(link, False))
    # While the backend is away: the local badge decides at once, everything is queued durably.
    started = time.monotonic()
    a = sim.call(call.StartTransaction(connector_id=1, id_tag="DRIVER", meter_start=0, timestamp=utc_iso()))
    assert a.id_tag_info["status"] == "Accepted"
    assert time.monotonic() - started < 1.0  # no wait for a primary known to be away
    sim.call(call.MeterValues(connector_id=1, transaction_id=a.transaction_id, meter_value=meter_value(100)))
    sim.call(call.StopTransaction(meter_stop=200, timestamp=utc_iso(), transaction_id=a.transaction_id))
    b = sim.call(call.StartTransaction(connector_id=1, id_tag="DRIVER", meter_start=200, timestamp=utc_iso()))
    sim.call(call.MeterValues(connector_id=1, transaction_id=b.transaction_id, meter_value=meter_value(300)))
    sim.call(call.Heartbeat())  # not a transaction message: not queued
    wait_until(lambda: QueuedMessage.objects.filter(link=link).count() == 5)
    # The controller restarts; the backend comes back; the charger reconnects.
    sim.close()
    daphne.stop()
    assert QueuedMessage.objects.filter(link=link).count() == 5
    cpo.start()
    url = daphne.start()
    sim = charger_factory(url, "CP-Q").connect()
    wait_until(lambda: len(cpo.payloads("MeterValues")) == 2, timeout_s=20)
    actions = [action for action in cpo.actions("CP-Q") if action not in {"BootNotification", "StatusNotification"}]
    assert actions == ["StartTransaction", "MeterValues", "StopTransaction", "StartTransaction", "MeterValues"]
    # The Stop of the transaction started while the backend was away carries the backend's id, never -1.
    assert cpo.payloads("StopTransaction")[0]["transactionId"] == 1000
    assert [p["transactionId"] for p in cpo.payloads("MeterValues")] == [1000, 1001]
    wait_until(lambda: not QueuedMessage.objects.filter(link=link).exists())
    assert dict(TransactionIdMap.objects.filter(link=link).values_list("local_transaction_id",
                                                                      "upstream_transaction_id")) == {
        a.transaction_id: 1000, b.transaction_id: 1001}


def test_a_message_refused_too_often_is_dropped_and_its_stop_never_goes_up_unmapped(daphne, cpo, charger_factory):
    link = link_to(cpo, "CP-R", transaction_message_attempts=3)
    Badge.objects.create(id_tag="DRIVER")
    sim = charger_factory(daphne.start(), "CP-R").connect()
    sim.boot()
    wait_until(lambda: is_connected(link))
    cpo.reject["StartTransaction"] = 3
    tx = sim.call(call.StartTransaction(connector_id=1, id_tag="DRIVER", meter_start=0, timestamp=utc_iso()))
    assert tx.id_tag_info["status"] == "Accepted"  # the primary refused to answer: the local decision
    sim.call(call.StopTransaction(meter_stop=10, timestamp=utc_iso(), transaction_id=tx.transaction_id))
    wait_until(lambda: UpstreamBackend.objects.get(pk=link.backend_id).dropped_messages == 2)
    assert not QueuedMessage.objects.filter(link=link).exists()
    assert cpo.actions("CP-R").count("StartTransaction") == 3
    assert "StopTransaction" not in cpo.actions("CP-R")


def test_the_queue_is_bounded_and_drops_meter_values_first(daphne, cpo, charger_factory):
    link = link_to(cpo, "CP-B", queue_max_messages=10)
    Badge.objects.create(id_tag="DRIVER")
    cpo.stop()
    sim = charger_factory(daphne.start(), "CP-B").connect()
    sim.boot()
    wait_until(lambda: UpstreamLink.objects.get(pk=link.pk).last_error)
    tx = sim.call(call.StartTransaction(connector_id=1, id_tag="DRIVER", meter_start=0, timestamp=utc_iso()))
    for wh in range(12):
        sim.call(call.MeterValues(connector_id=1, transaction_id=tx.transaction_id, meter_value=meter_value(wh)))
    sim.call(call.StopTransaction(meter_stop=99, timestamp=utc_iso(), transaction_id=tx.transaction_id))
    wait_until(lambda: QueuedMessage.objects.filter(link=link, action="StopTransaction").exists())
    rows = list(QueuedMessage.objects.filter(link=link).values_list("action", flat=True))
    assert len(rows) == 10 and rows[0] == "StartTransaction" and rows[-1] == "StopTransaction"
    assert UpstreamBackend.objects.get(pk=link.backend_id).dropped_meter_values == 4


def test_rejected_credentials_and_bad_urls_are_shown_on_the_link(daphne, charger_factory):
    guarded = FakeCpo(password="right")
    try:
        wrong = link_to(guarded, "CP-AUTH", password="wrong")
        charger = Charger.objects.create(charge_point_id="CP-NOWHERE", registration_status=RegistrationStatus.ACCEPTED)
        backend = UpstreamBackend.objects.create(name="Nowhere", url=f"ws://127.0.0.1:{free_port()}/ocpp")
        nowhere = UpstreamLink.objects.create(charger=charger, role=Role.PRIMARY, backend=backend)
        url = daphne.start()
        for cp_id in ("CP-AUTH", "CP-NOWHERE"):
            charger_factory(url, cp_id).connect().boot()
        wait_until(lambda: UpstreamLink.objects.get(pk=wrong.pk).last_error)
        assert "HTTP 401" in UpstreamLink.objects.get(pk=wrong.pk).last_error
        assert guarded.auth_headers[0].startswith("Basic ")
        wait_until(lambda: UpstreamLink.objects.get(pk=nowhere.pk).last_error)
        assert "cannot connect" in UpstreamLink.objects.get(pk=nowhere.pk).last_error
        assert not UpstreamLink.objects.filter(connected=True).exists()
    finally:
        guarded.close()
    for bad in ("http://cpo.example/ocpp", "ws:///ocpp", "ws://cpo.example/ocpp?x=1", "cpo.example"):
        with pytest.raises(ValidationError):
            UpstreamBackend(name="Bad", url=bad).full_clean()
