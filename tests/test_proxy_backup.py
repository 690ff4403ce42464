"""The proxy's configuration in the configuration backup: backends and links round trip; their
status, queue, transaction id maps and the backends' profiles stay out."""

from __future__ import annotations

import json

import pytest

from chargers.models import Charger, RegistrationStatus
from dashboard import backup
from evce import clock
from proxy.models import QueuedMessage, Role, UpstreamBackend, UpstreamLink, UpstreamProfile

pytestmark = pytest.mark.django_db

CONFIGURED = {"name": "Roaming CPO", "url": "wss://cpo.example/ocpp/", "password": "s3cret", "verify_tls": False,
              "ping_interval_s": 45, "message_timeout_s": 7.5, "transaction_message_attempts": 5,
              "transaction_message_retry_interval_s": 20, "queue_max_messages": 500, "enabled": True,
              "policy_reset": "local", "policy_data_transfer": "refuse"}


@pytest.fixture
def proxied() -> tuple[UpstreamLink, UpstreamLink]:
    one = Charger.objects.create(charge_point_id="CP-B1", registration_status=RegistrationStatus.ACCEPTED)
    two = Charger.objects.create(charge_point_id="CP-B2", registration_status=RegistrationStatus.ACCEPTED)
    cpo = UpstreamBackend.objects.create(**CONFIGURED)
    fleet = UpstreamBackend.objects.create(name="Fleet office", url="ws://10.0.0.5:9000/", enabled=False)
    primary = UpstreamLink.objects.create(charger=one, backend=cpo, role=Role.PRIMARY, upstream_identity="EXT-1")
    mirror = UpstreamLink.objects.create(charger=one, backend=fleet, role=Role.MIRROR, enabled=False)
    UpstreamLink.objects.create(charger=two, backend=cpo, role=Role.MIRROR)
    # Runtime state: what the links did, not what anyone configured.
    UpstreamLink.objects.filter(pk=primary.pk).update(connected=True, status_since=clock.now(),
                                                      last_error="connection closed", backend_boot_status="Accepted")
    UpstreamBackend.objects.filter(pk=cpo.pk).update(dropped_meter_values=12, dropped_messages=3)
    QueuedMessage.objects.create(link=primary, action="MeterValues", payload={}, created_at=clock.now())
    UpstreamProfile.objects.create(link=primary, connector_id=0, charging_profile_id=1, purpose="TxDefaultProfile",
                                   stack_level=0, profile={}, received_at=clock.now())
    return primary, mirror


def test_it_backs_up_the_backends_and_links_not_their_state(proxied):
    document = json.loads(json.dumps(backup.backup(now=clock.now())))
    assert document["counts"]["proxy.upstreambackend"] == 2 and document["counts"]["proxy.upstreamlink"] == 3
    assert not {"proxy.queuedmessage", "proxy.upstreamprofile", "proxy.transactionidmap"} & set(document["counts"])
    cpo = next(o["fields"] for o in document["objects"] if o["model"] == "proxy.upstreambackend"
               and o["fields"]["name"] == "Roaming CPO")
    assert {name: cpo[name] for name in CONFIGURED} == CONFIGURED
    assert not {"dropped_meter_values", "dropped_messages"} & set(cpo)
    link = next(o["fields"] for o in document["objects"] if o["model"] == "proxy.upstreamlink"
                and o["pk"] == proxied[0].pk)
    assert link == {"charger": proxied[0].charger_id, "backend": proxied[0].backend_id, "role": "primary",
                    "upstream_identity": "EXT-1", "enabled": True}


def test_a_restore_puts_the_backends_and_links_back(proxied):
    primary, mirror = proxied
    document = json.loads(json.dumps(backup.backup(now=clock.now())))
    UpstreamBackend.objects.filter(name="Fleet office").delete()  # and its link with it
    UpstreamBackend.objects.filter(pk=primary.backend_id).update(password="", policy_reset="")
    UpstreamLink.objects.filter(pk=primary.pk).update(role=Role.MIRROR, upstream_identity="")
    report = backup.restore(document)
    assert report.ok, report.errors
    assert report.created == {"upstream backends": 1, "upstream links": 1}
    cpo = UpstreamBackend.objects.get(pk=primary.backend_id)
    assert {name: getattr(cpo, name) for name in CONFIGURED} == CONFIGURED
    assert cpo.dropped_meter_values == 12  # counters kept
    restored = UpstreamLink.objects.get(pk=primary.pk)
    assert (restored.role, restored.upstream_identity, restored.connected, restored.last_error) == (
        "primary", "EXT-1", True, "connection closed")  # configuration back, state kept
    assert UpstreamLink.objects.get(pk=mirror.pk).enabled is False
    assert QueuedMessage.objects.count() == 1 and UpstreamProfile.objects.count() == 1  # untouched
    UpstreamBackend.objects.create(name="After restore", url="ws://127.0.0.1:1/")  # ids keep working


def test_a_second_primary_for_a_charger_is_refused_and_nothing_is_written(proxied):
    primary, mirror = proxied
    document = json.loads(json.dumps(backup.backup(now=clock.now())))
    for entry in document["objects"]:
        if entry["model"] == "proxy.upstreamlink" and entry["pk"] == mirror.pk:
            entry["fields"]["role"] = "primary"
        if entry["model"] == "proxy.upstreambackend" and entry["fields"]["name"] == "Roaming CPO":
            entry["fields"]["message_timeout_s"] = 3
    report = backup.restore(document)
    assert not report.ok and "already has a primary backend" in " ".join(report.errors)
    assert UpstreamBackend.objects.get(pk=primary.backend_id).message_timeout_s == 7.5
