"""Upstream CPO backends end to end: a real Daphne, a real `ocpp` charger, two fake backends."""

from __future__ import annotations

import time

import pytest
from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from badges.models import Badge
from chargers.models import AutoConfigurationKey, Charger, Direction, OcppMessage, RegistrationStatus
from proxy.models import Role, TransactionIdMap, UpstreamBackend, UpstreamLink
from tests.conftest import wait_until
from tests.ocpp_sim import utc_iso
from tests.proxy_cpo import FakeCpo
from transactions.models import Transaction

pytestmark = pytest.mark.slow


@pytest.fixture
def cpos():
    primary, mirror = FakeCpo(first_tx_id=1000), FakeCpo(first_tx_id=5000)
    yield primary, mirror
    primary.close()
    mirror.close()


def make_link(charger: Charger, cpo: FakeCpo, role: str, name: str, **options) -> UpstreamLink:
    backend = UpstreamBackend.objects.create(name=name, url=options.pop("url", cpo.url), message_timeout_s=2,
                                             transaction_message_retry_interval_s=0, **options)
    return UpstreamLink.objects.create(charger=charger, backend=backend, role=role)


def connected(*links: UpstreamLink) -> bool:
    return UpstreamLink.objects.filter(pk__in=[link.pk for link in links], connected=True).count() == len(links)


def meter_value(wh: int) -> list[dict]:
    return [{"timestamp": utc_iso(), "sampled_value": [{"value": str(wh), "measurand": "Energy.Active.Import.Register",
                                                        "unit": "Wh"}]}]


@pytest.fixture
def proxied(ocpp_url, charger_factory, cpos):
    """CP-PX: primary + mirror links, booted, one connector reported Available."""
    primary, mirror = cpos
    charger = Charger.objects.create(charge_point_id="CP-PX", registration_status=RegistrationStatus.ACCEPTED)
    links = make_link(charger, primary, Role.PRIMARY, "CPO primary"), make_link(charger, mirror, Role.MIRROR, "Mirror")
    sim = charger_factory(ocpp_url, "CP-PX").connect()
    sim.boot()
    sim.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
    wait_until(lambda: connected(*links))
    return sim, primary, mirror, links


def test_it_forwards_both_ways_and_maps_transaction_ids(proxied):
    sim, primary, mirror, (primary_link, mirror_link) = proxied
    Badge.objects.create(id_tag="DRIVER")
    for cpo in (primary, mirror):
        assert cpo.actions("CP-PX")[0] == "BootNotification"
        assert cpo.payloads("BootNotification")[0]["chargePointVendor"] == "TestVendor"
    tx = sim.call(call.StartTransaction(connector_id=1, id_tag="DRIVER", meter_start=0, timestamp=utc_iso()))
    assert tx.id_tag_info["status"] == "Accepted"
    wait_until(lambda: TransactionIdMap.objects.count() == 2)
    ids = dict(TransactionIdMap.objects.filter(local_transaction_id=tx.transaction_id)
               .values_list("link_id", "upstream_transaction_id"))
    assert ids == {primary_link.pk: 1000, mirror_link.pk: 5000}
    sim.call(call.MeterValues(connector_id=1, transaction_id=tx.transaction_id, meter_value=meter_value(150)))
    # Backend -> charger: the primary stops the session with its own id; the charger gets the local one.
    assert primary.call("CP-PX", call.RemoteStopTransaction(transaction_id=1000)).status == "Accepted"
    assert ("RemoteStopTransaction", {"transaction_id": tx.transaction_id}) in sim.cp.received
    sim.call(call.StopTransaction(meter_stop=300, timestamp=utc_iso(), transaction_id=tx.transaction_id,
                                  reason="Remote"))
    for cpo, upstream in ((primary, 1000), (mirror, 5000)):
        wait_until(lambda cpo=cpo: cpo.payloads("StopTransaction"))
        assert cpo.payloads("StopTransaction")[0]["transactionId"] == upstream
        assert cpo.payloads("MeterValues")[0]["transactionId"] == upstream
    # Reading is forwarded for both; the charger's answer is relayed.
    keys = mirror.call("CP-PX", call.GetConfiguration(key=["HeartbeatInterval"])).configuration_key
    assert {"key": "HeartbeatInterval", "value": "300", "readonly": False} in keys
    # Every charger-originated message goes up, not only transactions.
    sim.call(call.DataTransfer(vendor_id="com.example", message_id="hello", data="1"))
    sim.call(call.FirmwareStatusNotification(status="Downloading"))
    sim.call(call.DiagnosticsStatusNotification(status="Uploading"))
    for action in ("DataTransfer", "FirmwareStatusNotification", "DiagnosticsStatusNotification"):
        wait_until(lambda action=action: action in mirror.actions("CP-PX") and action in primary.actions("CP-PX"))
    # Connections and commands are events in the maintenance log, under the charger.
    events = set(OcppMessage.objects.filter(charge_point_id="CP-PX", direction=Direction.EVENT)
                 .values_list("action", flat=True))
    assert {"upstream CPO primary: connected", "upstream Mirror: connected"} <= events


def test_unknown_and_charger_side_actions_from_a_backend_get_the_ocpp_j_errors(proxied):
    sim, primary, _, _ = proxied
    assert primary.raw_call("CP-PX", "Frobnicate", {}).error_code == "NotImplemented"
    assert primary.raw_call("CP-PX", "Heartbeat", {}).error_code == "NotSupported"
    assert primary.raw_call("CP-PX", "Reset", {"type": "Gentle"}).error_code == "PropertyConstraintViolation"
    assert primary.raw_call("CP-PX", "RemoteStopTransaction", {"transactionId": 424242}).payload == {
        "status": "Rejected"}  # not a transaction this backend knows
    assert "Reset" not in [action for action, _ in sim.cp.received]


def test_a_rewritten_identity_is_what_the_backend_sees(ocpp_url, charger_factory, cpos):
    _, mirror = cpos
    charger = Charger.objects.create(charge_point_id="CP-LOCAL-9", registration_status=RegistrationStatus.ACCEPTED)
    link = make_link(charger, mirror, Role.MIRROR, "Roaming")
    link.upstream_identity = "EXT-77"
    link.save()
    charger_factory(ocpp_url, "CP-LOCAL-9").connect().boot()
    wait_until(lambda: connected(link))
    assert mirror.actions("EXT-77")[0] == "BootNotification" and not mirror.actions("CP-LOCAL-9")


def test_the_primary_decides_authorize_and_start(proxied):
    sim, primary, mirror, _ = proxied
    Badge.objects.create(id_tag="LOCAL-OK")
    primary.id_tags["LOCAL-OK"] = "Invalid"
    mirror.id_tags["LOCAL-OK"] = "Blocked"  # a mirror's answer is ignored
    assert sim.call(call.Authorize(id_tag="LOCAL-OK")).id_tag_info["status"] == "Invalid"
    tx = sim.call(call.StartTransaction(connector_id=1, id_tag="LOCAL-OK", meter_start=0, timestamp=utc_iso()))
    assert tx.id_tag_info["status"] == "Invalid"
    assert Transaction.objects.get(pk=tx.transaction_id).id_tag_status == "Invalid"
    # And the other way: a badge unknown here that the primary accepts; the session is then allocated.
    assert sim.call(call.Authorize(id_tag="CPO-ONLY")).id_tag_info["status"] == "Accepted"
    tx = sim.call(call.StartTransaction(connector_id=1, id_tag="CPO-ONLY", meter_start=0, timestamp=utc_iso()))
    assert tx.id_tag_info["status"] == "Accepted"
    assert Transaction.objects.get(pk=tx.transaction_id).id_tag_status == "Accepted"


def test_a_mirror_may_read_but_not_act(proxied):
    sim, primary, mirror, _ = proxied
    with pytest.raises(OCPPError) as refused:
        mirror.call("CP-PX", call.RemoteStartTransaction(id_tag="X", connector_id=1))
    assert refused.value.code == "SecurityError"
    with pytest.raises(OCPPError):
        mirror.call("CP-PX", call.Reset(type="Hard"))
    assert not {"RemoteStartTransaction", "Reset"} & {action for action, _ in sim.cp.received}
    assert primary.call("CP-PX", call.RemoteStartTransaction(id_tag="X", connector_id=1)).status == "Accepted"
    assert "RemoteStartTransaction" in [action for action, _ in sim.cp.received]
    # Keys the controller manages stay its own; others are changed.
    AutoConfigurationKey.objects.update_or_create(key="MeterValuesSampledData",
                                                  defaults={"value": "Current.Import", "enabled": True})
    change = call.ChangeConfiguration(key="MeterValuesSampledData", value="Energy.Active.Import.Register")
    assert primary.call("CP-PX", change).status == "Rejected"
    assert primary.call("CP-PX", call.ChangeConfiguration(key="LightIntensity", value="3")).status == "Accepted"
    # What reached the charger: the free key, never the managed key's upstream value (the
    # controller's own boot configuration may still be setting its keys meanwhile).
    changes = [(payload["key"], payload["value"]) for action, payload in sim.cp.received
               if action == "ChangeConfiguration"]
    assert ("LightIntensity", "3") in changes
    assert ("MeterValuesSampledData", "Energy.Active.Import.Register") not in changes
    # A policy set to "local" (applied within seconds: the link restarts): a harmless answer, the charger left alone.
    UpstreamBackend.objects.filter(name="Mirror").update(policy_reset="local")
    wait_until(lambda: mirror.actions("CP-PX").count("BootNotification") == 2, timeout_s=15)
    wait_until(lambda: "CP-PX" in mirror.cps)
    assert mirror.call("CP-PX", call.Reset(type="Hard")).status == "Rejected"
    assert "Reset" not in [action for action, _ in sim.cp.received]


def test_a_slow_primary_falls_back_to_the_local_decision_within_its_timeout(proxied):
    sim, primary, mirror, (primary_link, _) = proxied
    Badge.objects.create(id_tag="LOCAL-OK")
    primary.id_tags["LOCAL-OK"] = "Invalid"
    primary.delay_s = 4  # the message timeout is 2 s
    started = time.monotonic()
    assert sim.call(call.Authorize(id_tag="LOCAL-OK")).id_tag_info["status"] == "Accepted"
    assert 1.5 < time.monotonic() - started < 3.5
    # The mirror still got it; nothing else waited on the primary.
    wait_until(lambda: "Authorize" in mirror.actions("CP-PX"))


def test_the_backends_see_the_chargers_presence(proxied):
    sim, primary, mirror, links = proxied
    sim.close()
    wait_until(lambda: not primary.cps and not mirror.cps)
    wait_until(lambda: not UpstreamLink.objects.filter(connected=True).exists())
    assert set(UpstreamLink.objects.values_list("last_error", flat=True)) == {"the charger disconnected"}


def test_a_link_disabled_in_the_admin_closes_within_seconds(proxied):
    sim, primary, mirror, (_, mirror_link) = proxied
    UpstreamLink.objects.filter(pk=mirror_link.pk).update(enabled=False)
    wait_until(lambda: "CP-PX" not in mirror.cps, timeout_s=15)
    assert "CP-PX" in primary.cps
    sim.call(call.Heartbeat())
    wait_until(lambda: primary.actions("CP-PX").count("Heartbeat") == 1)
    assert "Heartbeat" not in mirror.actions("CP-PX")


def test_a_backend_flooding_commands_is_refused_beyond_a_few_waiting(proxied):
    sim, primary, _, _ = proxied
    sim.cp.silent = True  # the charger takes its time: the backend's commands queue up
    answers = primary.raw_calls_at_once("CP-PX", [("Reset", {"type": "Soft"})] * 5)
    # Three are taken (each reaches the charger in turn and times out), two are refused at once.
    assert [(answer.error_code, answer.error_description.split(":")[0]) for answer in answers] == [
        ("GenericError", "the charge point did not answer in time")] * 3 + [
        ("GenericError", "too many commands waiting for this charge point")] * 2
    assert [action for action, _ in sim.cp.received].count("Reset") == 1  # the silent charger hangs in the first


def test_a_boot_the_backend_does_not_accept_is_shown_and_retried(ocpp_url, charger_factory, cpos):
    primary, _ = cpos
    primary.boot_status, primary.boot_interval_s = "Pending", 1
    charger = Charger.objects.create(charge_point_id="CP-PEND", registration_status=RegistrationStatus.ACCEPTED)
    link = make_link(charger, primary, Role.PRIMARY, "Strict CPO")
    charger_factory(ocpp_url, "CP-PEND").connect().boot()
    wait_until(lambda: UpstreamLink.objects.get(pk=link.pk).backend_boot_status == "Pending")
    assert UpstreamLink.objects.get(pk=link.pk).last_error == "the backend answered the BootNotification with Pending"
    assert not connected(link)
    primary.boot_status = "Accepted"
    wait_until(lambda: connected(link), timeout_s=5)
    assert UpstreamLink.objects.get(pk=link.pk).last_error == ""


def test_a_link_added_or_enabled_while_its_charger_is_connected_opens_within_seconds(ocpp_url, charger_factory,
                                                                                    cpos):
    primary, mirror = cpos
    charger = Charger.objects.create(charge_point_id="CP-LATE", registration_status=RegistrationStatus.ACCEPTED)
    disabled = make_link(charger, mirror, Role.MIRROR, "Mirror", enabled=False)  # the backend is off
    sim = charger_factory(ocpp_url, "CP-LATE").connect()
    sim.boot()
    sim.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
    added = make_link(charger, primary, Role.PRIMARY, "CPO primary")  # the charger stays connected
    UpstreamBackend.objects.filter(pk=disabled.backend_id).update(enabled=True)
    wait_until(lambda: connected(added, disabled), timeout_s=9)  # the admin's changes are read every 5 s
    for cpo in (primary, mirror):  # presented as at a connection: its boot, then its statuses
        assert cpo.actions("CP-LATE")[:2] == ["BootNotification", "StatusNotification"]
    sim.call(call.Heartbeat())
    wait_until(lambda: "Heartbeat" in primary.actions("CP-LATE") and "Heartbeat" in mirror.actions("CP-LATE"))


def test_the_primarys_answer_to_a_data_transfer_reaches_the_charger(proxied):
    sim, primary, mirror, (primary_link, _) = proxied
    primary.data_transfer, mirror.data_transfer = ("Accepted", "pong"), ("Rejected", "ignored")
    answer = sim.call(call.DataTransfer(vendor_id="com.cpo", message_id="ping", data="1"))
    assert (answer.status, answer.data) == ("Accepted", "pong")  # here, no handler: UnknownVendorId
    assert primary.payloads("DataTransfer") == [{"vendorId": "com.cpo", "messageId": "ping", "data": "1"}]
    primary.reject["DataTransfer"] = 1  # a CALLERROR from the primary: the local answer
    assert sim.call(call.DataTransfer(vendor_id="com.cpo", message_id="ping")).status == "UnknownVendorId"
    primary.stop()  # the primary is down: the local answer, at once
    wait_until(lambda: not connected(primary_link))
    started = time.monotonic()
    assert sim.call(call.DataTransfer(vendor_id="com.cpo", message_id="ping")).status == "UnknownVendorId"
    assert time.monotonic() - started < 1


def test_a_relay_waits_for_the_boot_only_when_it_has_not_seen_one_and_holds_no_event_until_asked():
    """Links wait for the charger's boot; most relays have no link and never wait, so they hold
    no Event (0.8 KB per connected charger)."""
    import asyncio

    from proxy.relay import UpstreamRelay

    async def call(*_: object) -> None:
        return None

    async def scenario() -> None:
        booted = UpstreamRelay(1, "CP-B", call, [], booted=True)
        await asyncio.wait_for(booted.wait_booted(), 1)
        fresh = UpstreamRelay(2, "CP-F", call, [], booted=False)
        assert fresh._booted_event is None
        assert await fresh.answered("BootNotification", {}, {"status": "Accepted"}) is None
        await asyncio.wait_for(fresh.wait_booted(), 1)
        assert fresh._booted_event is None
        waiting = UpstreamRelay(3, "CP-W", call, [], booted=False)
        waiter = asyncio.ensure_future(waiting.wait_booted())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        assert await waiting.answered("BootNotification", {}, {"status": "Rejected"}) is None
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await waiting.answered("BootNotification", {}, {"status": "Accepted"})
        await asyncio.wait_for(waiter, 1)

    asyncio.run(scenario())
