"""Back up and restore the commissioned configuration, all or nothing.

What is configuration: site settings, the zone tree with its time-of-use rules, chargers (what
the installer set: zone, phases, limits, VIP, password hash…), automatic configuration keys,
meters, badge groups and badges with their rights, upstream CPO backends (their password
included: the controller sends it) and the chargers' links to them. Not in it: what the system
measured or heard (connection state, last readings, sessions, logs; the links' status, queued
messages, transaction id maps and backends' charging profiles) — a restored site learns those again.

Restore validates every object with the model's own rules (`full_clean`, the same checks as the
admin) inside one database transaction: one bad object and nothing is written; the report lists
every problem with the object it belongs to. Rows of the same id are updated (their runtime
fields are kept), others are created; nothing is deleted.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.core import serializers
from django.core.exceptions import ValidationError
from django.core.management.color import no_style
from django.core.serializers.base import DeserializationError
from django.db import connection, models, transaction

from badges.models import Badge, BadgeGroup
from chargers.models import AutoConfigurationKey, Charger
from loadmgmt.models import SiteSettings, TimeOfUseRule, Zone
from meters.models import Meter
from proxy.models import UpstreamBackend, UpstreamLink

FORMAT = "evce-configuration"
VERSION = 1
# Parents before children: a zone's parent, a charger's zone, a badge's group must exist first.
MODELS: list[type[models.Model]] = [SiteSettings, Zone, TimeOfUseRule, AutoConfigurationKey, Charger, Meter,
                                    BadgeGroup, Badge, UpstreamBackend, UpstreamLink]
# Editable fields that are measurements or state, not configuration.
RUNTIME_FIELDS = {
    Zone: {"measured_current_l1_a", "measured_current_l2_a", "measured_current_l3_a", "measured_power_kw",
           "measured_at", "pv_power_kw", "pv_current_l1_a", "pv_current_l2_a", "pv_current_l3_a", "pv_measured_at"},
    Charger: {"connected", "connected_at", "last_seen", "last_boot_at", "diagnostics_status", "firmware_status"},
    # Not editable, so left out anyway; named here so that making one editable does not put it in.
    UpstreamBackend: {"dropped_meter_values", "dropped_messages"},
    UpstreamLink: {"connected", "status_since", "last_error", "backend_boot_status"},
}


class RestoreRefused(Exception):
    """The upload is not a configuration backup this version can read."""


def config_fields(model: type[models.Model]) -> list[str]:
    skip = RUNTIME_FIELDS.get(model, set())
    names = [f.name for f in model._meta.get_fields()
             if getattr(f, "editable", False) and not f.auto_created and getattr(f, "concrete", False)
             and f.name not in skip]
    return names + [f.name for f in model._meta.many_to_many if f.editable and f.name not in skip]


def _ordered(model: type[models.Model]) -> list[models.Model]:
    if model is Zone:
        zones = list(Zone.objects.order_by("pk"))
        depth = {zone.pk: zone.depth() for zone in zones}
        return sorted(zones, key=lambda zone: (depth[zone.pk], zone.pk))
    return list(model._default_manager.order_by("pk"))


def backup(*, now: dt.datetime) -> dict[str, Any]:
    objects: list[dict[str, Any]] = []
    for model in MODELS:
        objects += serializers.serialize("python", _ordered(model), fields=config_fields(model))
    for entry in objects:
        entry["fields"] = {k: (v.isoformat() if isinstance(v, dt.datetime | dt.time | dt.date) else v)
                           for k, v in entry["fields"].items()}
    return {"format": FORMAT, "version": VERSION, "created": now.isoformat(),
            "counts": dict(Counter(entry["model"] for entry in objects)), "objects": objects}


@dataclass
class Report:
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def written(self) -> bool:
        return self.ok and not self.dry_run

    def lines(self) -> list[str]:
        """'3 zones updated' … (or 'to update' when nothing was written), for the page."""
        created, updated = ("created", "updated") if self.written else ("to create", "to update")
        return ([f"{count} {name} {created}" for name, count in sorted(self.created.items())]
                + [f"{count} {name} {updated}" for name, count in sorted(self.updated.items())])


class _Rollback(Exception):
    pass


def restore(document: object, *, dry_run: bool = False) -> Report:
    """Validate and write every object of `document`, or nothing at all."""
    entries = _entries(document)
    report = Report(dry_run=dry_run)
    try:
        with transaction.atomic():
            for number, entry in enumerate(entries, start=1):
                _restore_one(number, entry, report)
            if report.errors or dry_run:
                raise _Rollback
            _reset_sequences()
    except _Rollback:
        pass
    return report


def _entries(document: object) -> list[dict[str, Any]]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise RestoreRefused("this file is not an EVCE configuration backup")
    if document.get("version") != VERSION:
        raise RestoreRefused(f"backup version {document.get('version')!r}; this system reads version {VERSION}")
    entries = document.get("objects")
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise RestoreRefused("the backup has no list of objects")
    labels = {model._meta.label_lower for model in MODELS}
    unknown = sorted({str(entry.get("model")) for entry in entries} - labels)
    if unknown:
        raise RestoreRefused(f"the backup holds objects this restore does not take: {', '.join(unknown)}")
    return entries


def _restore_one(number: int, entry: dict[str, Any], report: Report) -> None:
    label = f"object {number} ({entry.get('model')} #{entry.get('pk')})"
    try:
        loaded = next(serializers.deserialize("python", [entry]))
    except (DeserializationError, ValidationError, ValueError, TypeError) as error:
        report.errors.append(f"{label}: {_message(error)}")
        return
    incoming = loaded.object
    model = type(incoming)
    fields = [name for name in config_fields(model) if name in entry.get("fields", {})]
    existing = model._default_manager.filter(pk=incoming.pk).first()
    target = existing or incoming
    if existing is not None:
        for name in fields:
            if not model._meta.get_field(name).many_to_many:
                setattr(existing, name, getattr(incoming, name))
    try:
        target.full_clean()
    except ValidationError as error:
        report.errors.append(f"{label}: {_message(error)}")
        return
    target.save()
    for name, values in (loaded.m2m_data or {}).items():
        getattr(target, name).set(values)
    (report.updated if existing is not None else report.created)[str(model._meta.verbose_name_plural)] += 1


def _message(error: Exception) -> str:
    if isinstance(error, ValidationError) and hasattr(error, "message_dict"):
        return "; ".join(f"{name}: {' '.join(messages)}" for name, messages in error.message_dict.items())
    if isinstance(error, ValidationError):
        return " ".join(error.messages)
    return str(error)


def _reset_sequences() -> None:
    """Rows restored with their ids must not collide with the next ids PostgreSQL hands out."""
    statements = connection.ops.sequence_reset_sql(no_style(), MODELS)
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
