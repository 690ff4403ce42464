"""A backend's charging profile enters the local allocation as a cap: the charger holds the lower.

Real Daphne, a real `ocpp` charger, a fake CPO backend, loop ticks in-process (tests.loop_helpers).
"""

from __future__ import annotations

import pytest
from ocpp.v16 import call

from badges.models import Badge
from chargers.models import Charger, RegistrationStatus
from loadmgmt.models import SiteSettings, Zone
from proxy.models import Role, TransactionIdMap, UpstreamBackend, UpstreamLink, UpstreamProfile
from tests.conftest import wait_until
from tests.loop_helpers import settle
from tests.ocpp_sim import utc_iso
from tests.proxy_cpo import FakeCpo

pytestmark = pytest.mark.slow
BACKEND_PROFILE_ID = 777


def backend_profile(purpose: str, limit: float, *, unit: str = "A", stack_level: int = 1,
                    transaction_id: int | None = None) -> dict:
    profile = {"charging_profile_id": BACKEND_PROFILE_ID, "stack_level": stack_level,
               "charging_profile_purpose": purpose, "charging_profile_kind": "Absolute",
               "charging_schedule": {"charging_rate_unit": unit, "start_schedule": utc_iso(),
                                     "charging_schedule_period": [{"start_period": 0, "limit": limit}]}}
    if transaction_id is not None:
        profile["transaction_id"] = transaction_id
    return profile


@pytest.fixture
def cpo():
    backend = FakeCpo(first_tx_id=1000)
    yield backend
    backend.close()


@pytest.fixture
def site(ocpp_url, charger_factory, cpo):
    """CP-CAP (32 A, three-phase) alone under a 32 A zone, its primary backend up."""
    settings = SiteSettings.load()
    settings.min_on_s = settings.min_off_s = 0
    settings.save()
    zone = Zone.objects.create(name="Feeder", max_current_a=32)
    charger = Charger.objects.create(charge_point_id="CP-CAP", registration_status=RegistrationStatus.ACCEPTED,
                                     zone=zone, rated_max_current_a=32, phases=3)
    backend = UpstreamBackend.objects.create(name="CPO", url=cpo.url, message_timeout_s=2)
    link = UpstreamLink.objects.create(charger=charger, backend=backend, role=Role.PRIMARY)
    Badge.objects.create(id_tag="DRIVER")
    sim = charger_factory(ocpp_url, "CP-CAP").connect()
    sim.boot()
    wait_until(lambda: UpstreamLink.objects.filter(pk=link.pk, connected=True).exists())
    return sim


@pytest.fixture
def charging(site):
    """The same with a session running at the local 32 A."""
    sim = site
    tx = sim.call(call.StartTransaction(connector_id=1, id_tag="DRIVER", meter_start=0, timestamp=utc_iso()))
    wait_until(lambda: TransactionIdMap.objects.filter(local_transaction_id=tx.transaction_id).exists())
    settle()
    assert sim.last_tx_limit() == 32.0
    return sim, tx.transaction_id


def set_profile(cpo: FakeCpo, connector_id: int, profile: dict) -> str:
    return cpo.call("CP-CAP", call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=profile)).status


def test_the_charger_holds_the_lower_of_the_local_and_the_backend_limit(charging, cpo):
    sim, local_tx = charging
    # Lower than local: a TxProfile for the backend's transaction id 1000 (= the local one).
    assert set_profile(cpo, 1, backend_profile("TxProfile", 10, transaction_id=1000)) == "Accepted"
    assert UpstreamProfile.objects.get().transaction_id == local_tx
    settle()
    assert sim.last_tx_limit() == 10.0
    # In watts: 13.8 kW over three phases at 230 V is 20 A.
    assert set_profile(cpo, 1, backend_profile("TxProfile", 13800, unit="W", transaction_id=1000)) == "Accepted"
    settle()
    assert sim.last_tx_limit() == 20.0
    # Higher than local: cleared, then a 40 A default from the backend: the local 32 A holds.
    assert cpo.call("CP-CAP", call.ClearChargingProfile(id=BACKEND_PROFILE_ID)).status == "Accepted"
    assert set_profile(cpo, 0, backend_profile("TxDefaultProfile", 40)) == "Accepted"
    settle()
    assert sim.last_tx_limit() == 32.0
    # Below the session's minimum (6 A): the session is paused.
    assert sim.profile_limits("TxDefaultProfile")[-1] == (0, 32.0)  # the safe default: under 40 A too
    assert set_profile(cpo, 0, backend_profile("ChargePointMaxProfile", 4, stack_level=2)) == "Accepted"
    settle()
    assert sim.last_tx_limit() == 0.0
    assert sim.profile_limits("TxDefaultProfile")[-1] == (0, 0.0)  # and the safe default follows the cap
    # The backend's profiles never reached the charger: every profile it holds is the local loop's.
    profiles = [payload["cs_charging_profiles"] for action, payload in sim.cp.received
                if action == "SetChargingProfile"]
    assert profiles and all(p["charging_profile_id"] != BACKEND_PROFILE_ID for p in profiles)


def test_get_composite_schedule_answers_the_lower_and_invalid_profiles_are_rejected(charging, cpo):
    assert set_profile(cpo, 1, backend_profile("TxProfile", 12, transaction_id=1000)) == "Accepted"
    settle()
    schedule = cpo.call("CP-CAP", call.GetCompositeSchedule(connector_id=1, duration=600)).charging_schedule
    assert schedule["charging_schedule_period"] == [{"start_period": 0, "limit": 12.0}]
    assert cpo.call("CP-CAP", call.ClearChargingProfile(connector_id=1)).status == "Accepted"
    assert cpo.call("CP-CAP", call.ClearChargingProfile(connector_id=1)).status == "Unknown"
    assert set_profile(cpo, 0, backend_profile("TxDefaultProfile", 40)) == "Accepted"
    settle()
    schedule = cpo.call("CP-CAP", call.GetCompositeSchedule(connector_id=1, duration=600, charging_rate_unit="W"))
    assert schedule.charging_schedule["charging_schedule_period"] == [{"start_period": 0, "limit": 22080.0}]
    # OCPP 1.6 §5.16: a ChargePointMaxProfile only on connector 0, a TxProfile only for a running transaction.
    assert set_profile(cpo, 1, backend_profile("ChargePointMaxProfile", 10)) == "Rejected"
    assert set_profile(cpo, 1, backend_profile("TxProfile", 10, transaction_id=999)) == "Rejected"
    assert set_profile(cpo, 2, backend_profile("TxProfile", 10)) == "Rejected"


def test_a_remote_start_profile_caps_the_transaction_it_starts(site, cpo):
    sim = site
    profile = backend_profile("TxProfile", 8)
    del profile["charging_schedule"]["start_schedule"]
    profile["charging_profile_kind"] = "Relative"
    answer = cpo.call("CP-CAP", call.RemoteStartTransaction(id_tag="DRIVER", connector_id=1,
                                                            charging_profile=profile))
    assert answer.status == "Accepted"
    remote = [payload for action, payload in sim.cp.received if action == "RemoteStartTransaction"]
    assert remote == [{"id_tag": "DRIVER", "connector_id": 1}]  # the charger never sees the backend's profile
    tx = sim.call(call.StartTransaction(connector_id=1, id_tag="DRIVER", meter_start=0, timestamp=utc_iso()))
    wait_until(lambda: UpstreamProfile.objects.filter(transaction_id=tx.transaction_id).exists())
    settle()
    assert sim.last_tx_limit() == 8.0
