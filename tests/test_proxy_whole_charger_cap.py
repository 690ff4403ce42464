"""A backend's connector-0 profiles on a charger with two connectors (OCPP 1.6 §3.13.2), in the
loop's own inputs and allocation, without I/O: ChargePointMax caps the charger as a whole (the sum
of its sessions), TxDefault on connector 0 each connector."""

from __future__ import annotations

import datetime as dt

import pytest

from chargers.models import Charger, ConfigurationKey, RegistrationStatus
from evce import clock
from loadmgmt import engine
from loadmgmt.apply import plan_defaults
from loadmgmt.inputs import gather
from loadmgmt.models import LimitState, SiteSettings, Zone
from proxy.models import Role, UpstreamBackend, UpstreamLink, UpstreamProfile
from transactions.models import Transaction

pytestmark = pytest.mark.django_db


@pytest.fixture
def twin() -> UpstreamLink:
    """CP-TWIN: two connectors, 32 A each, three-phase, connected, under a 100 A zone; a primary backend."""
    settings = SiteSettings.load()
    settings.min_on_s = settings.min_off_s = 0
    settings.save()
    zone = Zone.objects.create(name="Feeder", max_current_a=100)
    charger = Charger.objects.create(charge_point_id="CP-TWIN", registration_status=RegistrationStatus.ACCEPTED,
                                     zone=zone, rated_max_current_a=32, phases=3, connected=True)
    ConfigurationKey.objects.create(charger=charger, key="NumberOfConnectors", value="2")
    backend = UpstreamBackend.objects.create(name="CPO", url="ws://127.0.0.1:9/ocpp")
    return UpstreamLink.objects.create(charger=charger, backend=backend, role=Role.PRIMARY)


def backend_profile(link: UpstreamLink, purpose: str, limit: float, *, profile_id: int) -> None:
    schedule = {"chargingRateUnit": "A", "startSchedule": (clock.now() - dt.timedelta(minutes=1)).isoformat(),
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}
    UpstreamProfile.objects.create(
        link=link, connector_id=0, charging_profile_id=profile_id, purpose=purpose, stack_level=0,
        received_at=clock.now(),
        profile={"chargingProfileId": profile_id, "stackLevel": 0, "chargingProfilePurpose": purpose,
                 "chargingProfileKind": "Absolute", "chargingSchedule": schedule})


def start(link: UpstreamLink, connector_id: int) -> None:
    Transaction.objects.create(charger_id=link.charger_id, connector_id=connector_id, id_tag=f"D{connector_id}",
                               id_tag_status="Accepted", meter_start_wh=0, start_time=clock.now())


def allocated(now: dt.datetime) -> tuple[list[float], dict[int, float], list[str]]:
    inputs = gather(now)
    zones = inputs.engine_zones()
    allocation = engine.allocate(zones, inputs.sessions, inputs.policy, now.timestamp())
    problems = engine.check_allocation(zones, inputs.sessions, allocation)
    limits = sorted(limit.limit_a for limit in allocation.limits.values())
    return limits, plan_defaults(inputs, now)[0], problems


def test_it_keeps_the_sum_of_the_chargers_sessions_within_its_charge_point_max(twin):
    backend_profile(twin, "ChargePointMaxProfile", 20, profile_id=1)
    start(twin, 1)
    limits, defaults, problems = allocated(clock.now())
    assert (limits, problems) == ([20.0], [])  # alone, a session may take the whole charger's 20 A
    start(twin, 2)
    limits, defaults, problems = allocated(clock.now())
    assert (limits, problems) == ([10.0, 10.0], [])  # two share it, not 20 A each
    assert defaults[twin.charger_id] == 10.0  # the safe default holds on both connectors: half each


def test_a_session_that_cannot_be_lowered_is_counted_in_the_charge_point_max(twin):
    backend_profile(twin, "ChargePointMaxProfile", 20, profile_id=1)
    LimitState.objects.create(charger_id=twin.charger_id, connector_id=0, purpose="TxDefaultProfile", in_force_a=8)
    start(twin, 1)
    Transaction.objects.create(charger_id=twin.charger_id, connector_id=2, id_tag="REFUSED", id_tag_status="Invalid",
                               meter_start_wh=0, start_time=clock.now())  # it holds the 8 A default in force
    limits, _, problems = allocated(clock.now())
    assert (limits, problems) == ([12.0], [])


def test_a_tx_default_on_connector_0_is_per_connector(twin):
    backend_profile(twin, "TxDefaultProfile", 16, profile_id=2)
    start(twin, 1)
    start(twin, 2)
    limits, defaults, problems = allocated(clock.now())
    assert (limits, problems) == ([16.0, 16.0], [])
    assert defaults[twin.charger_id] == 16.0
