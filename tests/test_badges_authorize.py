"""Authorize and StartTransaction answers from real `ocpp` chargers: validity, rights, ConcurrentTx."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from ocpp.v16 import call

from badges.models import Badge, BadgeStatus
from chargers.models import Charger, RegistrationStatus
from loadmgmt.models import Zone
from tests.conftest import BASE_DIR
from tests.ocpp_sim import utc_iso
from transactions.models import Transaction

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture
def site(ocpp_url, charger_factory):
    """Two chargers: CP-A1 in the basement (a zone under the site's root), CP-A2 at the root."""
    root = Zone.objects.create(name="Site", max_current_a=100)
    basement = Zone.objects.create(name="Basement", parent=root, max_current_a=63)
    Zone.objects.create(name="Elsewhere", max_current_a=32)
    sims = {}
    for cp_id, zone in (("CP-A1", basement), ("CP-A2", root)):
        Charger.objects.create(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED, zone=zone)
        sims[cp_id] = charger_factory(ocpp_url, cp_id).connect()
        sims[cp_id].boot()
    return sims


def authorize(sim, id_tag: str) -> dict:
    return sim.call(call.Authorize(id_tag=id_tag)).id_tag_info


def start(sim, id_tag: str, *, connector: int = 1, at: dt.datetime | None = None):
    return sim.call(call.StartTransaction(connector_id=connector, id_tag=id_tag, meter_start=0,
                                          timestamp=utc_iso(at or dt.datetime.now(dt.UTC))))


@pytest.mark.parametrize(
    ("badge", "presented", "expected"),
    [
        ({}, "04A1B2C3", "Accepted"),
        ({}, "04a1b2c3", "Accepted"),  # IdToken is case-insensitive (CiString20Type)
        ({"status": BadgeStatus.BLOCKED}, "04A1B2C3", "Blocked"),
        ({"expires_at": NOW - DAY}, "04A1B2C3", "Expired"),
        ({"valid_from": NOW + DAY}, "04A1B2C3", "Invalid"),  # not valid yet
        ({"valid_from": NOW - DAY, "expires_at": NOW + DAY}, "04A1B2C3", "Accepted"),
        (None, "04A1B2C3", "Invalid"),  # unknown
    ],
    ids=["accepted", "other-case", "blocked", "expired", "not-yet-valid", "within-validity", "unknown"],
)
def test_authorize_answers_the_badge_status(site, badge, presented, expected):
    if badge is not None:
        Badge.objects.create(id_tag="04A1B2C3", **badge)
    assert authorize(site["CP-A1"], presented)["status"] == expected
    assert start(site["CP-A1"], presented).id_tag_info["status"] == expected


def test_an_accepted_answer_carries_expiry_and_parent(site):
    Badge.objects.create(id_tag="FLEET-7", expires_at=NOW + DAY, parent_id_tag="ACME-FLEET")
    info = authorize(site["CP-A1"], "FLEET-7")
    assert info["parent_id_tag"] == "ACME-FLEET"
    assert dt.datetime.fromisoformat(info["expiry_date"]) == NOW + DAY


def test_rights_limit_a_badge_to_its_chargers_and_zones(site):
    only_a2 = Badge.objects.create(id_tag="ONLY-A2")
    only_a2.chargers.add(Charger.objects.get(charge_point_id="CP-A2"))
    whole_site = Badge.objects.create(id_tag="SITE-WIDE")
    whole_site.zones.add(Zone.objects.get(name="Site"))  # CP-A1's zone is below it: allowed there too
    elsewhere = Badge.objects.create(id_tag="ELSEWHERE")
    elsewhere.zones.add(Zone.objects.get(name="Elsewhere"))
    answers = {
        (tag, cp_id): authorize(sim, tag)["status"]
        for tag in ("ONLY-A2", "SITE-WIDE", "ELSEWHERE")
        for cp_id, sim in site.items()
    }
    assert answers == {
        ("ONLY-A2", "CP-A1"): "Invalid", ("ONLY-A2", "CP-A2"): "Accepted",
        ("SITE-WIDE", "CP-A1"): "Accepted", ("SITE-WIDE", "CP-A2"): "Accepted",
        ("ELSEWHERE", "CP-A1"): "Invalid", ("ELSEWHERE", "CP-A2"): "Invalid",
    }
    refused = start(site["CP-A1"], "ONLY-A2")
    assert refused.id_tag_info["status"] == "Invalid"
    assert Transaction.objects.get(pk=refused.transaction_id).id_tag_status == "Invalid"


def test_a_second_running_session_gets_concurrent_tx(site):
    Badge.objects.create(id_tag="DRIVER")
    first = start(site["CP-A1"], "DRIVER")
    assert first.id_tag_info["status"] == "Accepted"
    assert authorize(site["CP-A2"], "DRIVER")["status"] == "ConcurrentTx"
    # On the charger running its session the driver may be presenting the badge to stop it.
    assert authorize(site["CP-A1"], "DRIVER")["status"] == "Accepted"
    second = start(site["CP-A1"], "DRIVER", connector=2)
    assert second.id_tag_info["status"] == "ConcurrentTx"
    site["CP-A1"].call(call.StopTransaction(meter_stop=10, timestamp=utc_iso(), transaction_id=first.transaction_id,
                                            id_tag="DRIVER"))
    site["CP-A1"].call(call.StopTransaction(meter_stop=0, timestamp=utc_iso(), transaction_id=second.transaction_id,
                                            reason="DeAuthorized"))
    assert start(site["CP-A2"], "DRIVER").id_tag_info["status"] == "Accepted"


def test_an_offline_start_replayed_later_is_never_concurrent_tx(site):
    Badge.objects.create(id_tag="DRIVER")
    assert start(site["CP-A1"], "DRIVER").id_tag_info["status"] == "Accepted"
    replay = start(site["CP-A2"], "DRIVER", at=NOW - dt.timedelta(hours=2))
    assert replay.id_tag_info["status"] == "Accepted"
    assert Transaction.objects.get(pk=replay.transaction_id).offline


def test_concurrent_sessions_when_the_site_allows_them(servers, transactional_db, charger_factory):
    url = servers.daphne(BADGES_ALLOW_CONCURRENT_TX="true")
    Badge.objects.create(id_tag="SHARED")
    sims = []
    for cp_id in ("CP-C1", "CP-C2"):
        Charger.objects.create(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED)
        sims.append(charger_factory(url, cp_id).connect())
        sims[-1].boot()
    assert [start(sim, "SHARED").id_tag_info["status"] for sim in sims] == ["Accepted", "Accepted"]
    assert authorize(sims[0], "SHARED")["status"] == "Accepted"


def test_the_concurrency_setting_is_parsed_strictly():
    env = dict(os.environ, BADGES_ALLOW_CONCURRENT_TX="perhaps")
    done = subprocess.run([sys.executable, "-c", "import evce.settings"], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "BADGES_ALLOW_CONCURRENT_TX='perhaps' is not a boolean" in done.stderr
