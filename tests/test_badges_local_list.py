"""Local authorization lists pushed to real `ocpp` chargers: full, differential, mismatch, refusals."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.auth.models import User

from badges.models import Badge, BadgeStatus, LocalListState, LocalListStatus
from badges.services import badges_changed, badges_set_status
from badges.tasks import sync_local_lists
from chargers.models import Charger, RegistrationStatus
from tests.conftest import wait_until

NOW = dt.datetime.now(dt.UTC)


def stateful_local_list(sim) -> None:
    """Make the simulated charger keep its list and version like a real one does.

    `cp.send_local_list_statuses` may hold the statuses of the next SendLocalList answers.
    """
    cp = sim.cp
    cp.local_list = {}
    cp.send_local_list_statuses = []
    original = cp.route_map["SendLocalList"]["_on_action"]

    async def on_send_local_list(**payload: Any):
        if cp.send_local_list_statuses:
            cp.answers["SendLocalList"] = cp.send_local_list_statuses.pop(0)
        answer = await original(**payload)
        if answer.status == "Accepted":
            if payload["update_type"] == "Full":
                cp.local_list = {}
            for item in payload.get("local_authorization_list") or []:
                if item.get("id_tag_info"):
                    cp.local_list[item["id_tag"]] = item["id_tag_info"]["status"]
                else:
                    cp.local_list.pop(item["id_tag"], None)
            cp.answers["GetLocalListVersion"] = str(payload["list_version"])
        return answer

    cp.route_map["SendLocalList"]["_on_action"] = on_send_local_list


def pushes(sim) -> list[tuple[str, int, list[str]]]:
    """(updateType, listVersion, id tags) of every SendLocalList the charger received."""
    return [
        (p["update_type"], p["list_version"], [item["id_tag"] for item in p.get("local_authorization_list") or []])
        for action, p in list(sim.cp.received) if action == "SendLocalList"
    ]


def settled(cp_id: str) -> LocalListState:
    """The charger's list state once its (boot) sync has finished."""
    def done() -> LocalListState | None:
        state = LocalListState.objects.filter(charger__charge_point_id=cp_id).first()
        busy = state is None or state.syncing_until is not None or state.status == LocalListStatus.UNKNOWN
        return None if busy else state
    return wait_until(done)


@pytest.fixture
def badges(transactional_db) -> None:
    Badge.objects.create(id_tag="ALICE", expires_at=NOW + dt.timedelta(days=30), parent_id_tag="ACME")
    Badge.objects.create(id_tag="BOB", status=BadgeStatus.BLOCKED)
    Badge.objects.create(id_tag="CAROL", expires_at=NOW - dt.timedelta(days=1))
    Badge.objects.create(id_tag="DAN", valid_from=NOW + dt.timedelta(days=1))


@pytest.fixture
def charger(ocpp_url, charger_factory, badges):
    Charger.objects.create(charge_point_id="CP-LIST", registration_status=RegistrationStatus.ACCEPTED)
    sim = charger_factory(ocpp_url, "CP-LIST").connect()
    stateful_local_list(sim)
    sim.boot()
    settled("CP-LIST")
    return sim


@pytest.fixture
def clock_at(monkeypatch):
    """Move this process's clock (the beat task runs here; the chargers' server keeps real time)."""
    def move(moment: dt.datetime) -> None:
        monkeypatch.setattr("evce.clock.now", lambda: moment)
    return move


def test_a_booting_charger_gets_the_full_list(charger):
    assert pushes(charger) == [("Full", 1, ["ALICE", "BOB", "CAROL", "DAN"])]
    assert charger.cp.local_list == {"ALICE": "Accepted", "BOB": "Blocked", "CAROL": "Expired", "DAN": "Invalid"}
    state = LocalListState.objects.get(charger__charge_point_id="CP-LIST")
    assert (state.status, state.list_version, state.entry_count) == (LocalListStatus.IN_SYNC, 1, 4)
    sent = next(p for action, p in charger.cp.received if action == "SendLocalList")
    alice = sent["local_authorization_list"][0]["id_tag_info"]
    assert alice["parent_id_tag"] == "ACME" and alice["expiry_date"]


def test_badge_changes_are_pushed_as_differential_once_quiet(charger, clock_at):
    changed_at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    clock_at(changed_at)
    badges_set_status(badge_pks=[Badge.objects.get(id_tag="ALICE").pk], status=BadgeStatus.BLOCKED, now=changed_at)
    Badge.objects.filter(id_tag="CAROL").delete()
    badges_changed(now=changed_at)
    Badge.objects.create(id_tag="ERIN")
    badges_changed(now=changed_at + dt.timedelta(seconds=5))
    clock_at(changed_at + dt.timedelta(seconds=8))
    assert sync_local_lists() == {}  # changes still settling: nothing sent yet
    clock_at(changed_at + dt.timedelta(seconds=20))
    assert sync_local_lists() == {"CP-LIST": "Differential list accepted at v2 (4 entries)"}
    assert pushes(charger)[1:] == [("Differential", 2, ["ALICE", "ERIN", "CAROL"])]
    assert charger.cp.local_list == {"ALICE": "Blocked", "BOB": "Blocked", "DAN": "Invalid", "ERIN": "Accepted"}
    assert sync_local_lists() == {}  # in sync: nothing due until the hourly check
    clock_at(changed_at + dt.timedelta(hours=2))
    assert sync_local_lists() == {"CP-LIST": "in sync at v2"}
    assert len(pushes(charger)) == 2


def test_a_charger_whose_version_differs_gets_the_full_list(charger):
    charger.cp.answers["GetLocalListVersion"] = "7"  # e.g. the list was reset or set by another system
    result = sync_local_lists(charger_pks=[Charger.objects.get(charge_point_id="CP-LIST").pk])
    assert result["CP-LIST"].startswith("Full list accepted at v8")
    assert "version mismatch: charger has v7, we pushed v1" in result["CP-LIST"]
    assert pushes(charger)[-1] == ("Full", 8, ["ALICE", "BOB", "CAROL", "DAN"])


@pytest.mark.parametrize("refusal", ["VersionMismatch", "Failed"])
def test_a_refused_differential_is_followed_by_the_full_list(charger, refusal):
    Badge.objects.create(id_tag="ERIN")
    charger.cp.send_local_list_statuses = [refusal, "Accepted"]
    result = sync_local_lists(charger_pks=[Charger.objects.get(charge_point_id="CP-LIST").pk])
    assert pushes(charger)[1:] == [("Differential", 2, ["ERIN"]), ("Full", 2, ["ALICE", "BOB", "CAROL", "DAN", "ERIN"])]
    assert f"differential answered {refusal}: full list sent" in result["CP-LIST"]
    assert LocalListState.objects.get(charger__charge_point_id="CP-LIST").status == LocalListStatus.IN_SYNC


@pytest.mark.parametrize(
    ("answers", "status", "sent"),
    [
        ({"GetLocalListVersion": "-1"}, LocalListStatus.NOT_SUPPORTED, 0),
        ({"SendLocalList": "NotSupported"}, LocalListStatus.NOT_SUPPORTED, 1),
        ({"SendLocalList": "Failed"}, LocalListStatus.FAILED, 1),
        ({"SendLocalList": "VersionMismatch"}, LocalListStatus.VERSION_MISMATCH, 1),
    ],
    ids=["version-minus-one", "not-supported", "failed", "version-mismatch"],
)
def test_a_charger_refusing_the_list_is_marked(ocpp_url, charger_factory, badges, answers, status, sent):
    Charger.objects.create(charge_point_id="CP-NOLIST", registration_status=RegistrationStatus.ACCEPTED)
    sim = charger_factory(ocpp_url, "CP-NOLIST").connect()
    sim.cp.answers.update(answers)
    sim.boot()
    state = settled("CP-NOLIST")
    assert state.status == status
    assert len(pushes(sim)) == sent
    assert state.last_success_at is None


def test_charger_list_limits_are_respected(ocpp_url, charger_factory, badges):
    Charger.objects.create(charge_point_id="CP-SMALL", registration_status=RegistrationStatus.ACCEPTED)
    sim = charger_factory(ocpp_url, "CP-SMALL").connect()
    stateful_local_list(sim)
    # Read by the automatic configuration's GetConfiguration before the list is pushed.
    sim.cp.config.update({"LocalAuthListMaxLength": "3", "SendLocalListMaxLength": "2"})
    sim.boot()
    state = settled("CP-SMALL")
    assert pushes(sim) == [("Full", 1, ["ALICE", "BOB"]), ("Differential", 2, ["CAROL"])]
    assert "list cut to LocalAuthListMaxLength=3 of 4 badges" in state.last_result
    assert state.list_version == 2


def test_the_admin_pushes_lists_on_demand(charger, client, monkeypatch):
    monkeypatch.setattr(sync_local_lists, "delay", lambda **kwargs: sync_local_lists.apply(kwargs=kwargs))
    # The role groups are tested in test_badges_admin (a flushed database has none).
    client.force_login(User.objects.create_superuser("boss", password="pw"))  # noqa: S106
    state = LocalListState.objects.get(charger__charge_point_id="CP-LIST")
    response = client.post("/admin/badges/localliststate/", {"action": "push_full_now", "_selected_action": [state.pk]})
    assert response.status_code == 302
    assert pushes(charger)[-1] == ("Full", 2, ["ALICE", "BOB", "CAROL", "DAN"])
    badge = Badge.objects.get(id_tag="BOB")
    client.post("/admin/badges/badge/", {"action": "unblock_badges", "_selected_action": [badge.pk]})
    client.post("/admin/badges/badge/", {"action": "push_local_lists", "_selected_action": [badge.pk]})
    assert pushes(charger)[-1] == ("Differential", 3, ["BOB"])
    assert charger.cp.local_list["BOB"] == "Accepted"


class _ListKeeper:
    """A charger's side of the list calls, in process: it keeps the version it accepted."""

    def __init__(self) -> None:
        self.version = 0
        self.calls: list[str] = []

    async def __call__(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(action)
        if action == "GetLocalListVersion":
            return {"listVersion": self.version}
        self.version = payload["listVersion"]
        return {"status": "Accepted"}


def test_a_charger_holding_its_list_at_boot_gets_one_question_and_nothing_is_computed(badges, clock_at):
    from asgiref.sync import async_to_sync
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from badges.local_list import RECHECK_AFTER, boot_step_local_list

    pk = Charger.objects.create(charge_point_id="CP-AGAIN", registration_status=RegistrationStatus.ACCEPTED).pk
    keeper = _ListKeeper()
    first_at = dt.datetime.now(dt.UTC)
    clock_at(first_at)
    assert async_to_sync(boot_step_local_list)(keeper, pk).startswith("Full list accepted at v1")
    keeper.calls.clear()
    clock_at(first_at + dt.timedelta(minutes=10))  # rebooted: a storm after a restart
    with CaptureQueriesContext(connection) as queries:
        assert async_to_sync(boot_step_local_list)(keeper, pk) == "in sync at v1"
    assert keeper.calls == ["GetLocalListVersion"]
    # The claim (its row, the conditional update, the revision) and the release: no badge read, no plan
    # (not counting the batches' transaction statements).
    statements = [query["sql"] for query in queries
                  if not query["sql"].startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT"))]
    assert len(statements) <= 4, statements
    assert not any('"badges_badge"' in query["sql"] for query in queries)
    state = LocalListState.objects.get(charger_id=pk)
    assert (state.status, state.list_version, state.syncing_until) == (LocalListStatus.IN_SYNC, 1, None)
    assert state.last_attempt_at == first_at  # the hourly recheck still counts from the last full check

    # A charger that lost its list (another version) gets the full list at once, without a second question.
    keeper.version, keeper.calls = 0, []
    assert async_to_sync(boot_step_local_list)(keeper, pk).startswith("Full list accepted at v2")
    assert keeper.calls == ["GetLocalListVersion", "SendLocalList"]

    # Badges changed since (a new revision): the list is computed again, and the differential sent.
    Badge.objects.create(id_tag="ERIN")
    badges_changed(now=first_at + dt.timedelta(minutes=11))
    keeper.calls = []
    clock_at(first_at + dt.timedelta(minutes=12))
    assert async_to_sync(boot_step_local_list)(keeper, pk) == "Differential list accepted at v3 (5 entries)"

    # Long enough since the last full check: computed again even when the versions match.
    clock_at(first_at + dt.timedelta(minutes=12) + RECHECK_AFTER)
    with CaptureQueriesContext(connection) as queries:
        assert async_to_sync(boot_step_local_list)(keeper, pk) == "in sync at v3"
    assert any('"badges_badge"' in query["sql"] for query in queries)


def test_syncs_starting_together_are_claimed_and_planned_in_one_batch(badges):
    """A storm of new chargers: their claims and plans are one batch reading the badges once,
    their outcomes and releases another; each charger still gets its own list (zone rights)."""
    import asyncio

    from asgiref.sync import async_to_sync
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from badges import local_list
    from loadmgmt.models import Zone

    site = Zone.objects.create(name="Site", max_current_a=100)
    garage = Zone.objects.create(name="Garage", parent=site, max_current_a=63)
    Badge.objects.get(id_tag="ALICE").zones.add(site)  # ALICE: the site and every zone below it
    inside = [Charger.objects.create(charge_point_id=f"CP-IN-{n}", zone=garage,
                                     registration_status=RegistrationStatus.ACCEPTED).pk for n in range(4)]
    outside = Charger.objects.create(charge_point_id="CP-OUT", registration_status=RegistrationStatus.ACCEPTED).pk
    keepers = {pk: _ListKeeper() for pk in [*inside, outside]}

    async def boot_all() -> tuple[list[str], int, int]:
        results = await asyncio.gather(*(local_list.boot_step_local_list(keeper, pk) for pk, keeper in keepers.items()))
        return list(results), local_list._starts().batches, local_list._ends().batches

    with CaptureQueriesContext(connection) as queries:
        results, starts, ends = async_to_sync(boot_all)()
    assert all(result == "Full list accepted at v1 (4 entries)" for result in results), results
    assert (starts, ends) == (1, 1)
    assert sum('FROM "badges_badge"' in query["sql"] for query in queries) == 1
    # The list states created by one INSERT statement (run for each row), the chargers' zones and
    # configuration read once.
    assert sum('INSERT INTO "badges_localliststate"' in query["sql"] for query in queries) == 1
    assert sum('FROM "chargers_configurationkey"' in query["sql"] for query in queries) == 1
    assert sum(query["sql"].startswith('SELECT "chargers_charger"."id", "chargers_charger"."zone_id"')
               for query in queries) == 1
    for pk in keepers:
        state = LocalListState.objects.get(charger_id=pk)
        assert (state.status, state.list_version, state.syncing_until) == (LocalListStatus.IN_SYNC, 1, None)
        assert state.entries["alice"]["idTagInfo"]["status"] == ("Accepted" if pk in inside else "Invalid")


@pytest.mark.django_db
def test_an_in_sync_mark_keeps_the_time_of_the_first_success():
    from badges.local_list import _in_sync, _SyncEnd

    charger = Charger.objects.create(charge_point_id="CP-SYNCED")
    LocalListState.objects.create(charger=charger, status=LocalListStatus.FAILED)
    first, later = dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC), dt.datetime(2026, 12, 2, 9, tzinfo=dt.UTC)
    for revision, result, at in [(7, "full list of 3 sent", first), (8, "1 change sent", later)]:
        end = _SyncEnd(charger.pk)
        end.then(_in_sync(revision, result, at))
        end.run()
    state = LocalListState.objects.get(charger=charger)
    assert (state.status, state.synced_revision, state.last_result, state.last_success_at) == (
        LocalListStatus.IN_SYNC, 8, "1 change sent", first)


@pytest.mark.django_db
def test_a_sync_end_is_one_update_written_as_its_outcomes_in_order_would_be():
    """An accepted list then the in-sync mark, merged into one UPDATE with the claim's release:
    the accepted list's time wins over the kept first success (as two UPDATEs in order would)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from badges.local_list import _accepted, _in_sync, _mark, _SyncEnd

    charger = Charger.objects.create(charge_point_id="CP-ENDED")
    long_ago, now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 12, 2, 9, tzinfo=dt.UTC)
    LocalListState.objects.create(charger=charger, status=LocalListStatus.FAILED, last_success_at=long_ago,
                                  syncing_until=now + dt.timedelta(minutes=5))
    end = _SyncEnd(charger.pk)
    end.then(_mark(LocalListStatus.FAILED, "first try failed"))
    end.then(_accepted(4, {"alice": {"idTag": "ALICE"}}, now))
    end.then(_in_sync(9, "full list accepted at v4", now + dt.timedelta(seconds=1)))
    with CaptureQueriesContext(connection) as queries:
        end.run()
    assert len(queries) == 1
    state = LocalListState.objects.get(charger=charger)
    assert (state.status, state.list_version, state.synced_revision, state.last_result, state.last_success_at,
            state.syncing_until, state.entries) == (
        LocalListStatus.IN_SYNC, 4, 9, "full list accepted at v4", now, None, {"alice": {"idTag": "ALICE"}})


@pytest.mark.django_db
def test_a_charger_another_sync_holds_is_not_claimed_and_a_second_sync_in_a_batch_finds_it_claimed():
    """Two pushes to one charger never interleave: a claim still running (syncing_until ahead)
    refuses the sync, an expired one is taken over, and of two syncs of one charger in a batch
    only the first claims it. The claims are written by one statement."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from badges.local_list import CLAIM_FOR, _start_many, _SyncStart

    now = dt.datetime(2026, 12, 2, 9, tzinfo=dt.UTC)
    held, expired, fresh = (Charger.objects.create(charge_point_id=f"CP-{name}") for name in ("HELD", "OLD", "NEW"))
    LocalListState.objects.create(charger=held, syncing_until=now + dt.timedelta(seconds=30))
    LocalListState.objects.create(charger=expired, syncing_until=now - dt.timedelta(seconds=1))
    starts = [_SyncStart(held.pk, now, at_boot=True, force_full=False),
              _SyncStart(expired.pk, now, at_boot=True, force_full=False),
              _SyncStart(fresh.pk, now, at_boot=True, force_full=False),
              _SyncStart(fresh.pk, now, at_boot=True, force_full=False)]
    with CaptureQueriesContext(connection) as queries:
        claimed = _start_many(starts)
    assert [claimed[start][0] is not None for start in starts] == [False, True, True, False]
    # (an executemany is logged once, as "<n> times: UPDATE …")
    assert sum('UPDATE "badges_localliststate"' in query["sql"] for query in queries) == 1
    states = {state.charger_id: state for state in LocalListState.objects.all()}
    assert states[held.pk].syncing_until == now + dt.timedelta(seconds=30)  # untouched
    for charger in (expired, fresh):
        assert (states[charger.pk].syncing_until, states[charger.pk].last_attempt_at) == (now + CLAIM_FOR, now)
