"""Authorization rules: what a badge may do, answered as an OCPP idTagInfo; badge writes.

The answer to Authorize and StartTransaction (OCPP 1.6 §4.1, §4.8, §7.2), in this order:
1. unknown id tag (matched ignoring case: IdToken is a CiString) → Invalid;
2. blocked → Blocked;
3. not valid yet (`valid_from` in the future) → Invalid;
4. past its `valid until` → Expired;
5. rights: a badge with chargers or zones may use only those chargers, and every charger in
   those zones or below them (a charger's zone counts with all its ancestors) → else Invalid;
6. the badge already has a running session and BADGES_ALLOW_CONCURRENT_TX is false →
   ConcurrentTx. For Authorize, a session on the same charger does not count (the driver
   may be presenting the badge to stop it); for StartTransaction any other running session
   counts, except when the start was replayed after an offline period (it happened already);
7. otherwise Accepted, with the expiry date and the parent id tag.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.db.models import F

from badges.models import Badge, BadgeListRevision, BadgeStatus
from chargers.models import Charger
from transactions.models import Transaction, TransactionState


class AuthorizationStatus:
    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    CONCURRENT_TX = "ConcurrentTx"


@dataclass(frozen=True)
class IdTagInfo:
    status: str
    expiry_date: dt.datetime | None = None
    parent_id_tag: str | None = None

    def as_ocpp(self) -> dict[str, str]:
        """The idTagInfo object in OCPP camelCase."""
        info: dict[str, str] = {"status": self.status}
        if self.expiry_date is not None:
            info["expiryDate"] = self.expiry_date.isoformat()
        if self.parent_id_tag:
            info["parentIdTag"] = self.parent_id_tag
        return info


def zone_parents() -> dict[int, int | None]:
    """Every zone's parent (the zone tree is small: one query instead of one per level)."""
    zone_model: Any = Charger._meta.get_field("zone").related_model  # loadmgmt.Zone, without importing loadmgmt
    return dict(zone_model.objects.values_list("pk", "parent_id"))


def lineage_in(parents: Mapping[int, int | None], zone_pk: int | None) -> set[int]:
    """The zone `zone_pk` and all its ancestors in the tree `parents` (see `zone_parents`)."""
    lineage: set[int] = set()
    while zone_pk is not None and zone_pk not in lineage:
        lineage.add(zone_pk)
        zone_pk = parents.get(zone_pk)
    return lineage


def may_use(*, charger_ids: set[int], zone_ids: set[int], charger_pk: int, lineage: set[int]) -> bool:
    """Rights rule: no charger and no zone = every charger; else the charger or one of its zones."""
    if not charger_ids and not zone_ids:
        return True
    return charger_pk in charger_ids or bool(zone_ids & lineage)


def badge_find(id_tag: str) -> Badge | None:
    return Badge.objects.by_id_tag(id_tag).first()


class BadgeReads:
    """Badge reads kept for one batch of requests handled in one database transaction.

    A fleet's StartTransactions arriving together mostly carry few badges (a depot's, a
    fleet card): each badge is found once and its rights (chargers, zones) read once, instead
    of three queries per start. Only for the length of one transaction: a badge changed by an
    operator is seen by the next batch.
    """

    def __init__(self) -> None:
        self._badges: dict[str, Badge | None] = {}
        self._rights: dict[int, tuple[set[int], set[int]]] = {}
        self._parents: dict[int, int | None] | None = None

    def find(self, id_tag: str) -> Badge | None:
        key = id_tag.lower()
        if key not in self._badges:
            self._badges[key] = badge_find(id_tag)
        return self._badges[key]

    def may_use(self, badge: Badge, charger: Charger) -> bool:
        """Whether `badge`'s rights allow `charger` (`may_use`); the badge's rights and the zone
        tree read once for the batch, the tree only when a right names a zone or charger."""
        rights = self._rights.get(badge.pk)
        if rights is None:
            rights = self._rights[badge.pk] = (set(badge.chargers.values_list("pk", flat=True)),
                                               set(badge.zones.values_list("pk", flat=True)))
        charger_ids, zone_ids = rights
        if not charger_ids and not zone_ids:
            return True
        lineage: set[int] = set()
        if charger.zone_id is not None:
            if self._parents is None:
                self._parents = zone_parents()
            lineage = lineage_in(self._parents, charger.zone_id)
        return may_use(charger_ids=charger_ids, zone_ids=zone_ids, charger_pk=charger.pk, lineage=lineage)


def badge_authorize(
    *,
    id_tag: str,
    now: dt.datetime,
    charger: Charger | None = None,
    starting: bool = False,
    offline: bool = False,
    exclude_transaction_pk: int | None = None,
    check_concurrency: bool = True,
    badge: Badge | None | Literal["find"] = "find",
    reads: BadgeReads | None = None,
) -> IdTagInfo:
    """Decide whether `id_tag` may charge now (on `charger`, when given). Unknown tags are Invalid.

    `starting` is True for a StartTransaction (other sessions on the same charger count as
    concurrent), `offline` for a start replayed after an outage (concurrency is not checked),
    `check_concurrency` False for the idTagInfo of a StopTransaction. `badge`: the tag's badge
    (or None) when the caller found it already; `reads`: a batch's badge reads to use.
    """
    reads = reads or BadgeReads()
    if isinstance(badge, str):
        badge = reads.find(id_tag)
    if badge is None:
        return IdTagInfo(AuthorizationStatus.INVALID)
    parent = badge.parent_id_tag or None
    status = badge.validity_status(now)
    if status == AuthorizationStatus.EXPIRED:
        return IdTagInfo(status, expiry_date=badge.expires_at, parent_id_tag=parent)
    if status != AuthorizationStatus.ACCEPTED:
        return IdTagInfo(status, parent_id_tag=parent)
    if charger is not None and not reads.may_use(badge, charger):
        return IdTagInfo(AuthorizationStatus.INVALID, parent_id_tag=parent)
    if check_concurrency and not offline and not settings.BADGES_ALLOW_CONCURRENT_TX:
        if _has_running_session(badge, charger, starting=starting, exclude_pk=exclude_transaction_pk):
            return IdTagInfo(AuthorizationStatus.CONCURRENT_TX, expiry_date=badge.expires_at, parent_id_tag=parent)
    return IdTagInfo(AuthorizationStatus.ACCEPTED, expiry_date=badge.expires_at, parent_id_tag=parent)


def _has_running_session(badge: Badge, charger: Charger | None, *, starting: bool, exclude_pk: int | None) -> bool:
    running = Transaction.objects.filter(badge=badge, state=TransactionState.ACTIVE)
    if exclude_pk is not None:
        running = running.exclude(pk=exclude_pk)
    if charger is not None and not starting:
        running = running.exclude(charger=charger)
    return running.exists()


# --- writes --------------------------------------------------------------------------------


def badges_changed(*, now: dt.datetime) -> int:
    """Record that badges changed: local lists are pushed once the changes have settled.

    The beat task `badges.tasks.sync_local_lists` pushes to chargers whose list predates the
    new revision, after a quiet period (see `badges.local_list.DEBOUNCE`).
    """
    with transaction.atomic():
        BadgeListRevision.load()
        BadgeListRevision.objects.filter(pk=1).update(revision=F("revision") + 1, changed_at=now)
    return BadgeListRevision.load().revision


def badges_set_status(*, badge_pks: list[int], status: str, now: dt.datetime) -> int:
    """Block or unblock badges (the only change an operator may make)."""
    if status not in BadgeStatus.values:
        raise ValueError(f"unknown badge status {status!r}")
    count = Badge.objects.filter(pk__in=badge_pks).exclude(status=status).update(status=status, updated_at=now)
    if count:
        badges_changed(now=now)
    return count
