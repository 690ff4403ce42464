"""RFID badges (OCPP idTags), who holds them, where they may charge, and the local lists
pushed to chargers so that they can authorize them while offline."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower
from django.db.models.lookups import Exact

from chargers.models import Charger

# OCPP 1.6 IdToken is a CiString20Type: at most 20 printable ASCII characters, compared
# without regard to case. We keep the spelling the operator typed and compare lowercased.
ID_TAG_MAX_LENGTH = 20


def validate_id_tag(value: str) -> None:
    if not value.isascii() or not value.isprintable():
        raise ValidationError("An id tag is made of printable ASCII characters (OCPP CiString).")


class BadgeStatus(models.TextChoices):
    ACCEPTED = "accepted", "Accepted"
    BLOCKED = "blocked", "Blocked"


class BadgeGroup(models.Model):
    """A set of badges that belong together: a tenant, a company, a fleet."""

    name = models.CharField(
        max_length=60, unique=True,
        help_text="A tenant, a company or a fleet: sessions and statements can be filtered by group.",
    )
    description = models.CharField(max_length=200, blank=True, help_text="Free text.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class BadgeQuerySet(models.QuerySet["Badge"]):
    def by_id_tag(self, id_tag: str) -> BadgeQuerySet:
        """Badges whose id tag matches `id_tag` regardless of case (OCPP CiString)."""
        return self.filter(Exact(Lower("id_tag"), id_tag.lower()))


class Badge(models.Model):
    id_tag = models.CharField(
        max_length=ID_TAG_MAX_LENGTH,
        validators=[validate_id_tag],
        help_text="OCPP idTag (RFID UID, e.g. 04A1B2C3D4E5F6): up to 20 printable ASCII characters. "
        "The spelling is kept; matching ignores case.",
        verbose_name="id tag",
    )
    holder = models.CharField(
        max_length=100, blank=True,
        help_text="Person or vehicle the badge belongs to: shown on the dashboard, in sessions and statements.",
    )
    email = models.EmailField(blank=True, help_text="Contact address of the holder (optional).")
    reference = models.CharField(max_length=100, blank=True, help_text="Employee number, contract, plate…")
    group = models.ForeignKey(
        BadgeGroup, null=True, blank=True, on_delete=models.PROTECT, related_name="badges",
        help_text="Tenant, company or fleet the badge belongs to.",
    )
    status = models.CharField(
        max_length=10, choices=BadgeStatus.choices, default=BadgeStatus.ACCEPTED,
        help_text="Accepted badges may charge; blocked ones are refused (Blocked).",
    )
    valid_from = models.DateTimeField(
        null=True, blank=True, help_text="Refused (Invalid) before this moment.",
        verbose_name="valid from",
    )
    expires_at = models.DateTimeField("valid until", null=True, blank=True, help_text="Refused (Expired) from this "
                                      "moment on.")
    vip = models.BooleanField(default=False, help_text="Served first in priority allocation mode.", verbose_name="VIP")
    parent_id_tag = models.CharField(
        max_length=ID_TAG_MAX_LENGTH, blank=True, validators=[validate_id_tag],
        help_text="OCPP parent idTag: badges with the same parent may stop each other's sessions.",
        verbose_name="parent id tag",
    )
    chargers = models.ManyToManyField(
        Charger, blank=True, related_name="badges",
        help_text="Chargers this badge may use. With no charger and no zone, it may use every charger.",
    )
    zones = models.ManyToManyField(
        "loadmgmt.Zone", blank=True, related_name="badges",
        help_text="Zones this badge may use: every charger in the zone or below it.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When the badge was created.")
    updated_at = models.DateTimeField(auto_now=True, help_text="Last change of the badge.")

    objects = BadgeQuerySet.as_manager()

    # Set on an instance by badges.resources during a CSV import, never stored: whether the row
    # updates an existing badge, and its chargers/zones as loaded or as written.
    _was_existing: bool
    _imported_rights: dict[str, list[models.Model]]

    class Meta:
        ordering = ["id_tag"]
        constraints = [
            models.UniqueConstraint(
                Lower("id_tag"), name="badge_id_tag_unique_ci",
                violation_error_message="A badge with this id tag already exists (id tags ignore case).",
            ),
        ]
        permissions = [
            ("block_badge", "Can block and unblock badges"),
            ("download_statement", "Can download badge statements"),
        ]

    def __str__(self) -> str:
        return f"{self.id_tag} ({self.holder})" if self.holder else self.id_tag

    def validity_status(self, now: dt.datetime) -> str:
        """The OCPP status this badge has at `now`, before rights and running sessions are considered."""
        if self.status == BadgeStatus.BLOCKED:
            return "Blocked"
        if self.valid_from is not None and now < self.valid_from:
            return "Invalid"
        if self.expires_at is not None and self.expires_at <= now:
            return "Expired"
        return "Accepted"


class BadgeListRevision(models.Model):
    """One row: a counter bumped by every badge change, so that local lists know they are stale."""

    revision = models.PositiveBigIntegerField(default=0)
    changed_at = models.DateTimeField(null=True, blank=True)
    # Last time the sync looked for badges whose validity started (valid_from passed).
    validity_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "badge list revision"

    def __str__(self) -> str:
        return f"revision {self.revision}"

    @classmethod
    def load(cls) -> BadgeListRevision:
        row, _ = cls.objects.get_or_create(pk=1)
        return row


class LocalListStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not synchronised yet"
    IN_SYNC = "in_sync", "In sync"
    NOT_SUPPORTED = "not_supported", "Not supported by the charger"
    FAILED = "failed", "Failed (retried)"
    VERSION_MISMATCH = "version_mismatch", "Version mismatch (full list resent)"


class LocalListState(models.Model):
    """What we know of one charger's Local Authorization List (OCPP 1.6 §3.5.2)."""

    charger = models.OneToOneField(
        Charger, on_delete=models.CASCADE, related_name="local_list",
        help_text="The charger holding this copy of the badge list.",
    )
    status = models.CharField(
        max_length=20, choices=LocalListStatus.choices, default=LocalListStatus.UNKNOWN,
        help_text="Whether the charger holds the current badge list (Local Authorization List).",
    )
    list_version = models.IntegerField(
        default=0, help_text="Version the charger holds, per our last push.",
        verbose_name="list version",
    )
    # {id_tag: idTagInfo} as last accepted by the charger: the base of differential updates.
    entries = models.JSONField(default=dict, blank=True, editable=False)
    synced_revision = models.PositiveBigIntegerField(
        default=0, help_text="Badge list revision last pushed.",
        verbose_name="synced revision",
    )
    last_attempt_at = models.DateTimeField(
        null=True, blank=True,
        verbose_name="last attempt", help_text="Last SendLocalList or GetLocalListVersion sent to the charger.",
    )
    last_success_at = models.DateTimeField(
        null=True, blank=True,
        verbose_name="last success", help_text="Last time the charger confirmed the list.",
    )
    last_result = models.CharField(
        max_length=200, blank=True,
        verbose_name="last result", help_text="The charger's answer to the last attempt, or why it failed.",
    )
    # Claimed by the process pushing to this charger, so that two pushes never interleave.
    syncing_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["charger"]
        verbose_name = "local authorization list"

    def __str__(self) -> str:
        return f"{self.charger}: v{self.list_version} ({self.get_status_display()})"

    @property
    def entry_count(self) -> int:
        return len(self.entries or {})
