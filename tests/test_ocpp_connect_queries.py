"""The connect/boot path's database work: few statements, and the same answers as a fresh read."""

from __future__ import annotations

import datetime as dt

import pytest

from chargers import services
from chargers.models import Charger, Connector, OcppMessage, RegistrationStatus

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
INFO = services.BootInfo(vendor="V", model="M", firmware_version="1.2")


@pytest.fixture
def known(db):
    return Charger.objects.create(charge_point_id="CP-Q", registration_status=RegistrationStatus.ACCEPTED,
                                  heartbeat_interval_s=120)


def test_a_known_charger_connects_with_one_select_and_one_update(known, django_assert_num_queries):
    with django_assert_num_queries(1):
        who = services.charger_identify(charge_point_id="CP-Q")
    assert (who.charger_pk, who.charge_point_id, who.registration_status) == (known.pk, "CP-Q", "accepted")
    assert services.charger_identify(charge_point_id="cp-q").charger_pk == known.pk  # identities ignore case
    with django_assert_num_queries(1):
        grant = services.charger_connected(charger_pk=known.pk, channel_name="c1", now=NOW, seen=who)
    assert grant.replaced_channel == ""
    known.refresh_from_db()
    assert (known.connected, known.channel_name, known.last_seen) == (True, "c1", NOW)


def test_a_connection_taken_meanwhile_is_still_replaced(known):
    who = services.charger_identify(charge_point_id="CP-Q")  # seen: not connected
    services.charger_connected(charger_pk=known.pk, channel_name="c1", now=NOW)  # another one got in between
    grant = services.charger_connected(charger_pk=known.pk, channel_name="c2", now=NOW, seen=who)
    assert grant.replaced_channel == "c1"  # told to close, as without the shortcut


def test_a_boot_is_one_update_while_the_registration_is_as_seen(known, django_assert_num_queries):
    with django_assert_num_queries(1):
        answer = services.charger_boot(charger_pk=known.pk, info=INFO, now=NOW, seen=("accepted", 120))
    assert (answer.status, answer.interval_s) == ("Accepted", 120)
    known.refresh_from_db()
    assert (known.firmware_version, known.last_boot_at) == ("1.2", NOW)


def test_a_boot_after_the_operator_changed_the_charger_answers_from_the_row(known):
    Charger.objects.filter(pk=known.pk).update(registration_status=RegistrationStatus.REJECTED)
    answer = services.charger_boot(charger_pk=known.pk, info=INFO, now=NOW, seen=("accepted", 120))
    assert answer.status == "Rejected" and answer.seen == ("rejected", 120)
    assert Charger.objects.get(pk=known.pk).firmware_version == "1.2"


def test_a_status_of_a_known_connector_is_one_update_and_an_older_one_is_ignored(known, django_assert_num_queries):
    services.connector_status_update(charger_pk=known.pk, connector_id=1, status="Available", error_code="NoError",
                                     timestamp=NOW)
    with django_assert_num_queries(1):
        services.connector_status_update(charger_pk=known.pk, connector_id=1, status="Charging",
                                         error_code="NoError", timestamp=NOW + dt.timedelta(seconds=5))
    services.connector_status_update(charger_pk=known.pk, connector_id=1, status="Faulted", error_code="OtherError",
                                     timestamp=NOW)  # a replayed older one
    connector = Connector.objects.get(charger=known, connector_id=1)
    assert (connector.status, connector.status_at) == ("Charging", NOW + dt.timedelta(seconds=5))


def test_log_payloads_are_stored_clean_whatever_the_fast_path_decides(known):
    services.message_log_many(rows=[
        {"charge_point_id": "CP-Q", "charger_pk": known.pk, "direction": "in", "now": NOW, "payload": payload}
        for payload in ({"a": "plain"}, {"a": "x\u0000y"}, {"a": "\ud800"}, {"a": float("nan")}, None)
    ])
    stored = list(OcppMessage.objects.order_by("id").values_list("payload", flat=True))
    assert stored == [{"a": "plain"}, {"a": "x\ufffdy"}, {"a": "\ufffd"}, {"a": "nan"}, None]
