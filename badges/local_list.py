"""Local Authorization Lists (OCPP 1.6 §3.5.2, §5.10, §5.15): keep each charger's list in step
with the badges, so that it can authorize drivers while it cannot reach us.

What a charger's list holds: every badge, with the status it would get on that charger now —
Accepted (with its expiry date and parent id tag) where its rights allow it, Blocked,
Expired, or Invalid (not valid yet, or not allowed on this charger) — so that a badge
refused here is refused offline too, even with AllowOfflineTxForUnknownId. When the charger
holds fewer entries (LocalAuthListMaxLength) the Accepted ones go first.

One sync of one charger:
1. claim the charger (a conditional update), so that two pushes never interleave;
2. ask GetLocalListVersion: -1 or a NotSupported/NotImplemented error marks the charger
   "not supported" (checked again at its next boot). At a boot, a charger found in sync at the
   current badge revision within the last RECHECK_AFTER that still holds the version we pushed
   is in sync: nothing is computed or written beyond the claim and its release (what a
   reconnect storm of thousands of chargers repeats at every boot);
3. if the charger's version is not the one we last pushed (or nothing was pushed yet, or a
   full push is asked for) send a Full list, else a Differential one with the changes since
   the list the charger last accepted — nothing at all when there are none;
4. messages hold at most SendLocalListMaxLength entries: a longer full list goes as a Full
   message followed by Differential ones, each with the next version number;
5. Accepted: remember the version and the entries; Failed or VersionMismatch of a
   Differential: send the Full list instead; NotSupported: mark it; else mark it failed
   (retried later by the beat task).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, Value
from django.db.models.functions import Coalesce

from badges.models import Badge, BadgeListRevision, LocalListState, LocalListStatus
from badges.services import badges_changed, lineage_in, may_use, zone_parents
from chargers.batcher import Batcher
from chargers.bulkinsert import insert_new, update_rows
from chargers.commands import CallFailed, ChargerCallError
from chargers.loops import PerLoop
from chargers.models import Charger, ConfigurationKey
from evce import clock

logger = logging.getLogger(__name__)

CallFn = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
Entry = dict[str, Any]  # an OCPP AuthorizationData: {"idTag": …, "idTagInfo": {…}} (no idTagInfo = delete)

# Badge changes are pushed once they have been quiet this long (an import, a series of edits).
DEBOUNCE = dt.timedelta(seconds=10)
# Lists believed in sync are checked again (GetLocalListVersion) this often.
RECHECK_AFTER = dt.timedelta(hours=1)
RETRY_FAILED_AFTER = dt.timedelta(minutes=10)
CLAIM_FOR = dt.timedelta(minutes=5)
_STATUS_RANK = {"Accepted": 0, "Blocked": 1, "Expired": 2, "Invalid": 3}


# --- what each charger should hold ---------------------------------------------------------


@dataclass(frozen=True)
class BadgeSnapshot:
    """What every charger's list is computed from: the badges, their rights and the zone tree.
    Read once for the chargers synced together (a storm of new chargers read it once each)."""

    badges: list[Badge]
    rights_chargers: dict[int, set[int]]
    rights_zones: dict[int, set[int]]
    zone_parents: dict[int, int | None]

    @classmethod
    def read(cls) -> BadgeSnapshot:
        return cls(
            badges=list(Badge.objects.only("pk", "id_tag", "status", "valid_from", "expires_at", "parent_id_tag")),
            rights_chargers=_rights(Badge.chargers.through, "charger_id"),
            rights_zones=_rights(Badge.zones.through, "zone_id"),
            zone_parents=zone_parents(),
        )


def desired_entries(charger: Charger, now: dt.datetime, snapshot: BadgeSnapshot | None = None) -> dict[str, Entry]:
    """The list `charger` should hold now, keyed by lowercased id tag (tags ignore case)."""
    snapshot = snapshot or BadgeSnapshot.read()
    lineage = lineage_in(snapshot.zone_parents, charger.zone_id)
    entries: dict[str, Entry] = {}
    for badge in snapshot.badges:
        status = badge.validity_status(now)
        allowed = may_use(charger_ids=snapshot.rights_chargers.get(badge.pk, set()),
                          zone_ids=snapshot.rights_zones.get(badge.pk, set()), charger_pk=charger.pk, lineage=lineage)
        if status == "Accepted" and not allowed:
            status = "Invalid"
        info: dict[str, str] = {"status": status}
        if status == "Accepted" and badge.expires_at is not None:
            info["expiryDate"] = badge.expires_at.isoformat()
        if badge.parent_id_tag:
            info["parentIdTag"] = badge.parent_id_tag
        entries[badge.id_tag.lower()] = {"idTag": badge.id_tag, "idTagInfo": info}
    return entries


def _rights(through: Any, column: str) -> dict[int, set[int]]:
    rights: dict[int, set[int]] = {}
    for badge_id, target in through.objects.values_list("badge_id", column):
        rights.setdefault(badge_id, set()).add(target)
    return rights


def truncate(entries: dict[str, Entry], max_length: int | None) -> dict[str, Entry]:
    """Keep at most `max_length` entries, Accepted ones first (then Blocked, Expired, Invalid)."""
    if max_length is None or len(entries) <= max_length:
        return entries
    ranked = sorted(entries.items(), key=lambda item: (_STATUS_RANK.get(item[1]["idTagInfo"]["status"], 9), item[0]))
    return dict(ranked[:max_length])


def differential(old: dict[str, Entry], new: dict[str, Entry]) -> list[tuple[str, Entry]]:
    """Changes turning `old` into `new`: updated or added entries, then deletions (no idTagInfo)."""
    changes = [(key, entry) for key, entry in sorted(new.items()) if old.get(key) != entry]
    changes += [(key, {"idTag": old[key]["idTag"]}) for key in sorted(old) if key not in new]
    return changes


def chunks(changes: list[tuple[str, Entry]], size: int | None) -> list[list[tuple[str, Entry]]]:
    if not changes:
        return [[]]
    if not size:
        return [changes]
    return [changes[i : i + size] for i in range(0, len(changes), size)]


def apply_changes(snapshot: dict[str, Entry], changes: list[tuple[str, Entry]]) -> dict[str, Entry]:
    result = dict(snapshot)
    for key, entry in changes:
        if "idTagInfo" in entry:
            result[key] = entry
        else:
            result.pop(key, None)
    return result


# --- the sync itself -------------------------------------------------------------------------


@dataclass
class Plan:
    charger_pk: int
    revision: int
    list_version: int
    never_pushed: bool
    snapshot: dict[str, Entry]
    desired: dict[str, Entry]
    max_send: int | None
    supported_by_config: bool = True
    notes: list[str] = field(default_factory=list)


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number > 0 else None


_PLAN_KEYS = ("SupportedFeatureProfiles", "LocalAuthListMaxLength", "SendLocalListMaxLength")


def _plan(charger_pk: int, now: dt.datetime, *, state: LocalListState | None = None,
          snapshot: BadgeSnapshot | None = None, revision: int | None = None,
          charger: Charger | None = None, config: dict[str, str] | None = None) -> Plan:
    """What to send `charger_pk`: its list as it should be, and what we last pushed to it.
    `state`, `snapshot`, `revision`, `charger` (its pk and zone) and `config` (its `_PLAN_KEYS`)
    are read here unless the caller (a batch) read them."""
    if charger is None:
        charger = Charger.objects.only("pk", "zone_id").get(pk=charger_pk)
    if state is None:
        state, _ = LocalListState.objects.get_or_create(charger=charger)
    if config is None:
        config = dict(ConfigurationKey.objects.filter(charger_id=charger_pk, key__in=_PLAN_KEYS)
                      .values_list("key", "value"))
    profiles = config.get("SupportedFeatureProfiles")
    desired = desired_entries(charger, now, snapshot)
    max_length = _positive_int(config.get("LocalAuthListMaxLength"))
    plan = Plan(
        charger_pk=charger_pk,
        revision=BadgeListRevision.load().revision if revision is None else revision,
        list_version=state.list_version,
        never_pushed=state.last_success_at is None,
        snapshot=dict(state.entries or {}),
        desired=truncate(desired, max_length),
        max_send=_positive_int(config.get("SendLocalListMaxLength")),
        supported_by_config=profiles is None or "LocalAuthListManagement" in profiles,
    )
    if len(plan.desired) < len(desired):
        plan.notes.append(f"list cut to LocalAuthListMaxLength={max_length} of {len(desired)} badges")
    return plan


@dataclass(frozen=True)
class Claim:
    """The charger's list state as it was when this sync claimed it, and the badge revision."""

    status: str
    list_version: int
    synced_revision: int
    last_attempt_at: dt.datetime | None
    revision: int

    def believed_in_sync(self, now: dt.datetime) -> bool:
        """In sync at the current revision, checked within RECHECK_AFTER: the charger's version
        alone tells whether it still holds our list."""
        return (self.status == LocalListStatus.IN_SYNC and self.synced_revision == self.revision
                and self.last_attempt_at is not None and now - self.last_attempt_at < RECHECK_AFTER)


@dataclass(frozen=True, eq=False)
class _SyncStart:
    """One sync asking to start: its charger claimed (and planned, when its list will be needed).
    Keyed by identity: two syncs of one charger are never merged into one claim."""

    charger_pk: int
    now: dt.datetime
    at_boot: bool
    force_full: bool

    def needs_plan(self, claim: Claim) -> bool:
        """Whether the sync computes the list whatever the charger answers (see local_list_sync)."""
        return not (self.at_boot and not self.force_full and claim.believed_in_sync(self.now))


def _start_many(starts: Sequence[_SyncStart]) -> dict[_SyncStart, tuple[Claim | None, Plan | None]]:
    """Claim the chargers whose syncs start together, and plan those that will need their list,
    in one transaction: the list states, the badges, the revision and what the plans read of the
    chargers (zone, configuration) are read once for all of them, the missing states created in
    one INSERT (a storm of new chargers otherwise read them, and committed a claim, once per
    charger: a third of its database thread's time). The claims are one UPDATE run for every
    claimed charger, decided on the states read locked (`_claims`)."""
    with transaction.atomic():
        revision = BadgeListRevision.load().revision
        states = _states_of([start.charger_pk for start in starts])
        claims = _claims(starts, states, revision)
        planned = [start for start in starts if (claim := claims[start]) is not None and start.needs_plan(claim)]
        plans: dict[_SyncStart, Plan] = {}
        if planned:
            snapshot = BadgeSnapshot.read()
            pks = {start.charger_pk for start in planned}
            chargers = {charger.pk: charger for charger in Charger.objects.only("pk", "zone_id").filter(pk__among=pks)}
            configs: dict[int, dict[str, str]] = {pk: {} for pk in pks}
            for charger_pk, key, value in ConfigurationKey.objects.filter(
                    charger_id__among=pks, key__in=_PLAN_KEYS).values_list("charger_id", "key", "value"):
                configs[charger_pk][key] = value
            for start in planned:
                plans[start] = _plan(start.charger_pk, start.now, state=states[start.charger_pk], snapshot=snapshot,
                                     revision=revision, charger=chargers[start.charger_pk],
                                     config=configs[start.charger_pk])
    return {start: (claims[start], plans.get(start)) for start in starts}


def _states_of(charger_pks: Sequence[int]) -> dict[int, LocalListState]:
    """The chargers' list states, locked until the transaction ends (PostgreSQL; a SQLite write
    transaction holds the database); those missing (new chargers) created in one INSERT."""
    wanted = set(charger_pks)
    locked = LocalListState.objects.select_for_update().order_by("pk")
    states = {state.charger_id: state for state in locked.filter(charger_id__among=wanted)}
    missing = wanted - states.keys()
    if missing:
        insert_new(LocalListState, [{"charger_id": pk} for pk in missing], ignore_conflicts=True)
        states.update({state.charger_id: state for state in locked.filter(charger_id__among=missing)})
    return states


def _claims(starts: Sequence[_SyncStart], states: dict[int, LocalListState], revision: int,
            ) -> dict[_SyncStart, Claim | None]:
    """Claim each start's charger for its sync unless another sync holds it (two pushes never
    interleave): decided on the locked states, in order (a second sync of a charger in the batch
    finds it claimed), written in one UPDATE run for every claimed charger."""
    claims: dict[_SyncStart, Claim | None] = {}
    rows: list[tuple[int, dt.datetime, dt.datetime]] = []
    claimed: set[int] = set()
    for start in starts:
        state = states[start.charger_pk]
        if start.charger_pk in claimed or (state.syncing_until is not None and state.syncing_until >= start.now):
            claims[start] = None  # another push to this charger is running
            continue
        claimed.add(start.charger_pk)
        claims[start] = Claim(state.status, state.list_version, state.synced_revision, state.last_attempt_at, revision)
        rows.append((state.pk, start.now + CLAIM_FOR, start.now))
    update_rows(LocalListState, ["syncing_until", "last_attempt_at"], rows)
    return claims


class _SyncEnd:
    """What one sync leaves to write when it ends (its outcome, then the release of its claim),
    written in one transaction with the other syncs ending at the same time, as one UPDATE of
    its charger's state (the outcomes' columns merged in order). Keyed by identity."""

    def __init__(self, charger_pk: int) -> None:
        self.charger_pk = charger_pk
        self.fields: dict[str, Any] = {}

    def then(self, fields: dict[str, Any]) -> None:
        """Columns to write, after those given before (a later value wins, as a later UPDATE
        would; a `_KeepFirst` keeps a value given before)."""
        for column, value in fields.items():
            if isinstance(value, _KeepFirst) and self.fields.get(column) is not None:
                continue
            self.fields[column] = value

    def run(self) -> None:
        fields = {column: value.expression(column) if isinstance(value, _KeepFirst) else value
                  for column, value in self.fields.items()}
        LocalListState.objects.filter(charger_id=self.charger_pk).update(**fields, syncing_until=None)


@dataclass(frozen=True)
class _KeepFirst:
    """A column's stored value, or this one when it has none (the first success's time)."""

    value: dt.datetime

    def expression(self, column: str) -> Coalesce:
        return Coalesce(column, Value(self.value, output_field=DateTimeField()))


def _end_many(ends: Sequence[_SyncEnd]) -> dict[_SyncEnd, None]:
    with transaction.atomic():
        for end in ends:
            end.run()
    return dict.fromkeys(ends)


# The running event loop's syncs, started and ended in batches (chargers.batcher).
_starts = PerLoop(lambda: Batcher(_start_many, max_batch=200, name="starting local list syncs"))
_ends = PerLoop(lambda: Batcher(_end_many, max_batch=200, name="ending local list syncs"))


def _release_still_in_sync(claim: Claim, version: int) -> dict[str, Any]:
    """Release a charger found holding the list it was in sync with. The time of the last full
    check stays (`last_attempt_at`), so that the hourly recheck still comes however often it reboots."""
    return {"last_attempt_at": claim.last_attempt_at, "last_result": f"in sync at v{version}"}


def _mark(status: str, result: str) -> dict[str, Any]:
    return {"status": status, "last_result": result[:200]}


def _accepted(version: int, entries: dict[str, Entry], now: dt.datetime) -> dict[str, Any]:
    return {"list_version": version, "entries": entries, "last_success_at": now}


def _record_accepted(charger_pk: int, version: int, entries: dict[str, Entry], now: dt.datetime) -> None:
    LocalListState.objects.filter(charger_id=charger_pk).update(**_accepted(version, entries, now))


def _in_sync(revision: int, result: str, now: dt.datetime) -> dict[str, Any]:
    """In sync at `revision`; the first success's time kept."""
    return {"status": LocalListStatus.IN_SYNC, "synced_revision": revision, "last_result": result[:200],
            "last_success_at": _KeepFirst(now)}


async def local_list_sync(call: CallFn, *, charger_pk: int, force_full: bool = False, at_boot: bool = False) -> str:
    """Bring one charger's local list up to date through `call(action, payload)`; says what it did.

    `at_boot`: a charger believed in sync (see `Claim.believed_in_sync`) that answers the version
    we pushed is taken as in sync, without computing its list (a sync asked for by an operator or
    the beat task always computes it). The claim and the plan are one batched step, the writes
    of the outcome and the release another (see `_start_many`, `_SyncEnd`): a new charger's
    sync costs two batched steps on the database thread, not five of its own."""
    start = _SyncStart(charger_pk, clock.now(), at_boot, force_full)
    claim, plan = await _starts().submit(start)
    if claim is None:
        return "busy: another push to this charger is running"
    end = _SyncEnd(charger_pk)
    try:
        charger_version = None
        if plan is None:
            charger_version = await _charger_version(call)
            if charger_version == claim.list_version:
                end.then(_release_still_in_sync(claim, charger_version))
                return f"in sync at v{charger_version}"
            plan = await database_sync_to_async(_plan)(charger_pk, clock.now())
        return await _sync(call, end, plan, force_full, charger_version)
    except _NotSupported as why:
        return _not_supported(end, str(why))
    except CallFailed as error:
        end.then(_mark(LocalListStatus.FAILED, f"failed: {error}"))
        return f"failed: {error}"
    finally:
        await _ends().submit(end)


class _NotSupported(Exception):
    """The charger has no local list (why)."""


async def _charger_version(call: CallFn) -> int:
    """The charger's list version (GetLocalListVersion); _NotSupported when it has no list."""
    try:
        answer = await call("GetLocalListVersion", {})
    except ChargerCallError as error:
        if error.code in {"NotSupported", "NotImplemented"}:
            raise _NotSupported(f"GetLocalListVersion: {error.code}") from None
        raise
    version = int(answer.get("listVersion", 0))
    if version == -1:
        raise _NotSupported("GetLocalListVersion answered -1")
    return version


async def _sync(call: CallFn, end: _SyncEnd, plan: Plan, force_full: bool, charger_version: int | None) -> str:
    """The full sync; `charger_version` is the charger's list version when already asked."""
    if not plan.supported_by_config:
        return _not_supported(end, "SupportedFeatureProfiles lacks LocalAuthListManagement")
    if charger_version is None:
        charger_version = await _charger_version(call)
    mismatch = not plan.never_pushed and charger_version != plan.list_version
    if mismatch:
        plan.notes.append(f"version mismatch: charger has v{charger_version}, we pushed v{plan.list_version}")
    full = force_full or plan.never_pushed or mismatch
    base = max(plan.list_version, charger_version, 0)
    if not full:
        changes = differential(plan.snapshot, plan.desired)
        if not changes:
            result = "; ".join([f"in sync at v{charger_version}", *plan.notes])
            end.then(_in_sync(plan.revision, result, clock.now()))
            return result
        outcome = await _send(call, end, plan, changes, base, full=False)
        if outcome in {"Failed", "VersionMismatch"}:
            plan.notes.append(f"differential answered {outcome}: full list sent")
            full = True
        else:
            return _finish(end, plan, outcome, "Differential")
    return _finish(end, plan, await _send(call, end, plan, sorted(plan.desired.items()), base, full=True), "Full")


async def _send(call: CallFn, end: _SyncEnd, plan: Plan, changes: list[tuple[str, Entry]], base: int, *,
                full: bool) -> str:
    """Send `changes` in as many messages as needed; the first status that is not Accepted.

    Each accepted message is recorded before the next goes out (a sync cut short keeps what the
    charger holds); the last one with the sync's end."""
    snapshot = {} if full else dict(plan.snapshot)
    version = base
    messages = chunks(changes, plan.max_send)
    for index, chunk in enumerate(messages):
        version += 1
        update_type = "Full" if full and index == 0 else "Differential"
        payload = {"listVersion": version, "updateType": update_type,
                   "localAuthorizationList": [entry for _, entry in chunk]}
        status = str((await call("SendLocalList", payload)).get("status", "?"))
        if status != "Accepted":
            return status
        snapshot = apply_changes(snapshot, chunk)
        plan.list_version = version
        plan.snapshot = snapshot
        if index < len(messages) - 1:
            await database_sync_to_async(_record_accepted)(plan.charger_pk, version, snapshot, clock.now())
        else:
            end.then(_accepted(version, snapshot, clock.now()))
    return "Accepted"


def _finish(end: _SyncEnd, plan: Plan, outcome: str, kind: str) -> str:
    if outcome == "Accepted":
        result = "; ".join([f"{kind} list accepted at v{plan.list_version} ({len(plan.snapshot)} entries)",
                            *plan.notes])
        end.then(_in_sync(plan.revision, result, clock.now()))
        return result
    if outcome == "NotSupported":
        return _not_supported(end, f"SendLocalList answered {outcome}")
    status = LocalListStatus.VERSION_MISMATCH if outcome == "VersionMismatch" else LocalListStatus.FAILED
    result = "; ".join([f"{kind} list answered {outcome}", *plan.notes])
    end.then(_mark(status, result))
    return result


def _not_supported(end: _SyncEnd, why: str) -> str:
    end.then(_mark(LocalListStatus.NOT_SUPPORTED, f"not supported: {why}"))
    return f"not supported: {why}"


async def boot_step_local_list(call: CallFn, charger_pk: int) -> str:
    """Boot step (see chargers.hooks): check the list of the charger that just booted."""
    if not settings.BADGES_LOCAL_LIST_SYNC:
        return "local list sync disabled"
    return await local_list_sync(call, charger_pk=charger_pk, at_boot=True)


# --- which chargers need a sync -------------------------------------------------------------


def badges_validity_started(*, now: dt.datetime) -> bool:
    """Count badges whose `valid_from` passed since the last look as a change (their entry changes)."""
    revision = BadgeListRevision.load()
    since = revision.validity_checked_at
    BadgeListRevision.objects.filter(pk=1).update(validity_checked_at=now)
    if since is not None and Badge.objects.filter(valid_from__gt=since, valid_from__lte=now).exists():
        badges_changed(now=now)
        return True
    return False


def chargers_due(*, now: dt.datetime) -> list[tuple[int, str]]:
    """Connected, accepted chargers whose list needs a look, unless badge changes are still settling."""
    revision = BadgeListRevision.load()
    if revision.changed_at is not None and now - revision.changed_at < DEBOUNCE:
        return []
    states = {state.charger_id: state for state in LocalListState.objects.all()}
    due = []
    for pk, cp_id in Charger.objects.filter(connected=True, registration_status="accepted").values_list(
        "pk", "charge_point_id"
    ):
        state = states.get(pk)
        if state is None or _needs_sync(state, revision.revision, now):
            due.append((pk, cp_id))
    return due


def _needs_sync(state: LocalListState, revision: int, now: dt.datetime) -> bool:
    last = state.last_attempt_at
    if state.status == LocalListStatus.NOT_SUPPORTED:
        return False  # checked again at the charger's next boot
    if state.status in {LocalListStatus.FAILED, LocalListStatus.VERSION_MISMATCH}:
        return last is None or now - last >= RETRY_FAILED_AFTER
    if state.status == LocalListStatus.UNKNOWN or state.synced_revision < revision:
        return True
    return last is None or now - last >= RECHECK_AFTER

