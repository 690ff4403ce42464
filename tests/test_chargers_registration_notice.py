"""The operator's registration change reaches the connected chargers through the channel layer;
a layer that fails for one of them is logged and never undoes or blocks the change (the
connection's periodic re-read catches up, chargers.consumers.ACCEPTANCE_RECHECK_S)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from chargers import commands
from chargers.models import Charger, RegistrationStatus
from chargers.services import chargers_set_registration


class FlakyLayer:
    """A channel layer whose sends to `broken` fail as an unreachable Redis would."""

    def __init__(self, broken: str) -> None:
        self.broken = broken
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if channel == self.broken:
            raise ConnectionError("Redis unreachable")
        self.sent.append((channel, message))


@pytest.mark.django_db
def test_a_failed_notice_is_logged_and_the_others_are_told(monkeypatch, caplog, django_capture_on_commit_callbacks):
    layer = FlakyLayer(broken="daphne!b")
    monkeypatch.setattr(commands, "get_channel_layer", lambda: layer)
    a = Charger.objects.create(charge_point_id="CP-A", registration_status=RegistrationStatus.ACCEPTED,
                               connected=True, channel_name="daphne!a")
    b = Charger.objects.create(charge_point_id="CP-B", registration_status=RegistrationStatus.ACCEPTED,
                               connected=True, channel_name="daphne!b")
    gone = Charger.objects.create(charge_point_id="CP-C", registration_status=RegistrationStatus.ACCEPTED,
                                  connected=False, channel_name="")
    caplog.set_level(logging.WARNING, logger="chargers.commands")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert chargers_set_registration(charger_pks=[a.pk, b.pk, gone.pk], status=RegistrationStatus.REJECTED) == 3
        assert layer.sent == []  # nothing is told before the change is committed
    assert len(callbacks) == 1
    assert layer.sent == [("daphne!a", {"type": "ocpp.registration", "accepted": False})]
    assert [r for r in caplog.records if "could not tell daphne!b of its registration" in r.getMessage()]
    assert set(Charger.objects.values_list("registration_status", flat=True)) == {RegistrationStatus.REJECTED}


@pytest.mark.django_db
def test_only_connected_chargers_are_told_and_the_count_says_how_many(monkeypatch):
    layer = FlakyLayer(broken="")
    monkeypatch.setattr(commands, "get_channel_layer", lambda: layer)
    on = Charger.objects.create(charge_point_id="CP-ON", connected=True, channel_name="daphne!on")
    off = Charger.objects.create(charge_point_id="CP-OFF", connected=False, channel_name="daphne!stale")
    assert commands.tell_registration([on.pk, off.pk], accepted=True) == 1
    assert layer.sent == [("daphne!on", {"type": "ocpp.registration", "accepted": True})]
    assert commands.tell_registration([off.pk], accepted=True) == 0
