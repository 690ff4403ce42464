"""The connect/boot path's database work: few statements, and the same answers as a fresh read."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chargers import services
from chargers.models import Charger, Connector, OcppMessage, RegistrationStatus

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
INFO = services.BootInfo(vendor="V", model="M", firmware_version="1.2")


@pytest.fixture
def known(db):
    return Charger.objects.create(charge_point_id="CP-Q", registration_status=RegistrationStatus.ACCEPTED,
                                  heartbeat_interval_s=120)


def _connect(*records: services.ConnectionRecord) -> dict[services.ConnectionRecord, services.ConnectionGrant]:
    return services.chargers_connected_many(records)


def _identify(charge_point_id: str) -> services.ChargerIdentity | services.ConnectionRefused:
    request = services.IdentifyRequest(charge_point_id)
    return services.chargers_identify_many([request])[request]


def test_a_known_charger_is_identified_by_one_select(known, django_assert_num_queries):
    with django_assert_num_queries(1):
        who = _identify("CP-Q")
    assert isinstance(who, services.ChargerIdentity)
    assert (who.charger_pk, who.charge_point_id, who.registration_status) == (known.pk, "CP-Q", "accepted")
    other_case = _identify("cp-q")  # identities ignore case
    assert isinstance(other_case, services.ChargerIdentity) and other_case.charger_pk == known.pk


def test_connections_cost_the_same_statements_however_many(known):
    """One SELECT of the rows (locked) and one UPDATE run per row, for one charger as for thirty."""
    many = [Charger.objects.create(charge_point_id=f"CP-M{n}") for n in range(30)]
    with CaptureQueriesContext(connection) as one:
        grant = _connect(services.ConnectionRecord(known.pk, "c1", NOW))
    records = [services.ConnectionRecord(charger.pk, f"m{n}", NOW) for n, charger in enumerate(many)]
    with CaptureQueriesContext(connection) as thirty:
        _connect(*records)
    assert len(thirty) == len(one) <= 4  # SELECT + UPDATE (+ the savepoint inside the test's transaction)
    assert grant[next(iter(grant))].replaced_channel == ""
    known.refresh_from_db()
    assert (known.connected, known.channel_name, known.connected_at, known.last_seen) == (True, "c1", NOW, NOW)
    assert sorted(Charger.objects.filter(pk__in=[c.pk for c in many]).values_list("channel_name", flat=True)) == \
        sorted(f"m{n}" for n in range(30))


def test_a_connection_replaces_the_one_stored_even_within_a_batch(known):
    _connect(services.ConnectionRecord(known.pk, "c1", NOW))  # held by an earlier connection
    first, second = services.ConnectionRecord(known.pk, "c2", NOW), services.ConnectionRecord(known.pk, "c3", NOW)
    grants = _connect(first, second)  # two handshakes of one charger accepted together
    assert (grants[first].replaced_channel, grants[second].replaced_channel) == ("c1", "c2")
    assert Charger.objects.get(pk=known.pk).channel_name == "c3"  # the last one serves it


def test_a_disconnected_charger_replaces_nothing(known):
    _connect(services.ConnectionRecord(known.pk, "c1", NOW))
    assert services.charger_disconnect(charger_pk=known.pk, channel_name="c1", now=NOW)
    record = services.ConnectionRecord(known.pk, "c2", NOW)
    assert _connect(record)[record].replaced_channel == ""


def test_a_connection_of_a_deleted_charger_fails_and_writes_nothing(known):
    gone = Charger.objects.create(charge_point_id="CP-GONE")
    gone_pk = gone.pk
    gone.delete()
    with pytest.raises(Charger.DoesNotExist):
        _connect(services.ConnectionRecord(known.pk, "c1", NOW), services.ConnectionRecord(gone_pk, "c2", NOW))
    assert Charger.objects.get(pk=known.pk).channel_name == ""  # the batch's transaction rolled back


def test_boots_cost_the_same_statements_however_many_and_answer_from_the_rows(known):
    others = [Charger.objects.create(charge_point_id=f"CP-B{n}", registration_status=RegistrationStatus.PENDING)
              for n in range(30)]
    with CaptureQueriesContext(connection) as one:
        answers = services.charger_boot_many([services.BootRecord(known.pk, INFO, NOW)])
    assert [(a.status, a.interval_s) for a in answers.values()] == [("Accepted", 120)]
    with CaptureQueriesContext(connection) as thirty:
        answers = services.charger_boot_many([services.BootRecord(c.pk, INFO, NOW) for c in others])
    assert len(thirty) == len(one) <= 4  # UPDATE + SELECT (+ the savepoint inside the test's transaction)
    assert {a.status for a in answers.values()} == {"Pending"}
    known.refresh_from_db()
    assert (known.vendor, known.model, known.firmware_version, known.last_boot_at, known.last_seen) == \
        ("V", "M", "1.2", NOW, NOW)


def test_a_boot_of_a_deleted_charger_fails_and_writes_nothing(known):
    gone = Charger.objects.create(charge_point_id="CP-GONE")
    gone_pk = gone.pk
    gone.delete()
    with pytest.raises(Charger.DoesNotExist):
        services.charger_boot_many([services.BootRecord(known.pk, INFO, NOW), services.BootRecord(gone_pk, INFO, NOW)])
    assert Charger.objects.get(pk=known.pk).last_boot_at is None  # the batch's transaction rolled back


def test_a_boot_after_the_operator_changed_the_charger_answers_from_the_row(known):
    Charger.objects.filter(pk=known.pk).update(registration_status=RegistrationStatus.REJECTED)
    record = services.BootRecord(known.pk, INFO, NOW)
    assert services.charger_boot_many([record])[record].status == "Rejected"
    assert Charger.objects.get(pk=known.pk).firmware_version == "1.2"


def test_a_status_of_a_known_connector_is_one_update_and_an_older_one_is_ignored(known, django_assert_num_queries):
    def status(state: str, error: str, at: dt.datetime) -> dict[str, object]:
        return {"charger_pk": known.pk, "connector_id": 1, "status": state, "error_code": error, "timestamp": at}

    services.connector_statuses_update(statuses=[status("Available", "NoError", NOW)])
    with django_assert_num_queries(2):  # the SELECT of the stored connectors, one UPDATE
        services.connector_statuses_update(statuses=[status("Charging", "NoError", NOW + dt.timedelta(seconds=5))])
    services.connector_statuses_update(statuses=[status("Faulted", "OtherError", NOW)])  # a replayed older one
    connector = Connector.objects.get(charger=known, connector_id=1)
    assert (connector.status, connector.status_at) == ("Charging", NOW + dt.timedelta(seconds=5))


def test_log_payloads_are_stored_clean_whatever_the_fast_path_decides(known):
    services.message_log_many(rows=[
        {"charge_point_id": "CP-Q", "charger_pk": known.pk, "direction": "in", "now": NOW, "payload": payload}
        for payload in ({"a": "plain"}, {"a": "x\u0000y"}, {"a": "\ud800"}, {"a": float("nan")}, None)
    ])
    stored = list(OcppMessage.objects.order_by("id").values_list("payload", flat=True))
    assert stored == [{"a": "plain"}, {"a": "x\ufffdy"}, {"a": "\ufffd"}, {"a": "nan"}, None]


def _admit(*requests: services.AdmissionRequest) -> dict[services.AdmissionRequest,
                                                          services.Admission | services.ConnectionRefused]:
    return services.chargers_admitted_many(requests)


def test_a_handshake_without_a_password_is_identified_and_recorded_in_one_step(known):
    """One transaction: the identity's SELECT, the rows locked and read, one UPDATE run per row;
    for one charger as for thirty (a reconnect storm's batch)."""
    many = [Charger.objects.create(charge_point_id=f"CP-A{n}") for n in range(30)]
    Charger.objects.filter(pk=known.pk).update(connected=True, channel_name="older")
    alone = services.AdmissionRequest("CP-Q", None, "c1", NOW)
    with CaptureQueriesContext(connection) as one:
        admitted = _admit(alone)[alone]
    assert isinstance(admitted, services.Admission)
    assert (admitted.identity.charger_pk, admitted.identity.charge_point_id, admitted.password_ok) == \
        (known.pk, "CP-Q", True)
    assert admitted.grant == services.ConnectionGrant(charger_pk=known.pk, replaced_channel="older")
    known.refresh_from_db()
    assert (known.connected, known.channel_name, known.connected_at, known.last_seen) == (True, "c1", NOW, NOW)
    requests = [services.AdmissionRequest(charger.charge_point_id, None, f"m{n}", NOW)
                for n, charger in enumerate(many)]
    with CaptureQueriesContext(connection) as thirty:
        storm = _admit(*requests)
    assert len(thirty) == len(one) <= 5  # SELECT, SELECT … FOR UPDATE, UPDATE (+ savepoint and release)
    assert [storm[r].grant.replaced_channel for r in requests] == [""] * 30  # type: ignore[union-attr]
    assert dict(Charger.objects.filter(pk__in=[c.pk for c in many]).values_list("charge_point_id", "channel_name")) \
        == {r.charge_point_id: r.channel_name for r in requests}


def test_a_handshake_whose_password_needs_hashing_is_identified_only(known):
    """The hash runs off the database thread: such a handshake's connection is recorded after it
    (`chargers_connected_many`), and a wrong user is refused without touching the row. Once the
    password was verified (cached), the next handshake is recorded in the same step."""
    known.set_password("s3cret-passw0rd")
    known.save()
    to_hash = services.AdmissionRequest("CP-Q", ("CP-Q", "s3cret-passw0rd"), "c1", NOW)
    wrong_user = services.AdmissionRequest("CP-Q", ("CP-OTHER", "s3cret-passw0rd"), "c2", NOW)
    missing = services.AdmissionRequest("CP-Q", None, "c3", NOW)
    admitted = _admit(to_hash, wrong_user, missing)
    assert [(admitted[r].password_ok, admitted[r].grant) for r in (to_hash, wrong_user, missing)] == \
        [(None, None), (False, None), (False, None)]  # type: ignore[union-attr]
    assert Charger.objects.get(pk=known.pk).channel_name == ""
    identity = admitted[to_hash].identity  # type: ignore[union-attr]
    assert services.charger_password_ok(identity=identity, credentials=to_hash.credentials)  # hashed: now cached
    again = services.AdmissionRequest("CP-Q", ("cp-q", "s3cret-passw0rd"), "c4", NOW)
    assert _admit(again)[again] == services.Admission(identity, True, services.ConnectionGrant(known.pk, ""))
    assert Charger.objects.get(pk=known.pk).channel_name == "c4"


def test_a_refused_handshake_is_answered_and_the_others_of_its_batch_admitted(known, settings):
    settings.OCPP_UNKNOWN_CHARGERS = "reject"
    unknown = services.AdmissionRequest("CP-NOBODY", None, "c1", NOW)
    ours = services.AdmissionRequest("CP-Q", None, "c2", NOW)
    admitted = _admit(unknown, ours)
    assert isinstance(admitted[unknown], services.ConnectionRefused) and admitted[unknown].http_status == 404
    assert admitted[ours].grant == services.ConnectionGrant(known.pk, "")  # type: ignore[union-attr]
    assert list(Charger.objects.values_list("charge_point_id", "channel_name")) == [("CP-Q", "c2")]


def test_a_new_charger_is_registered_and_recorded_in_one_step(db, settings):
    settings.OCPP_UNKNOWN_CHARGERS = "accept"
    first, second = (services.AdmissionRequest("CP-NEWCOMER", None, channel, NOW) for channel in ("c1", "c2"))
    admitted = _admit(first, second)  # two handshakes of one new charger arriving together
    assert admitted[first].identity.registered and not admitted[second].identity.registered  # type: ignore[union-attr]
    assert (admitted[first].grant.replaced_channel, admitted[second].grant.replaced_channel) == ("", "c1")  # type: ignore[union-attr]
    assert list(Charger.objects.values_list("charge_point_id", "connected", "channel_name")) == \
        [("CP-NEWCOMER", True, "c2")]
