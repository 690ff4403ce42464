"""CSV import/export of badges (django-import-export), shared by the admin and the commands.

The file (UTF-8, comma-separated, header on line 1; the columns may come in any order, and
a missing column leaves that attribute untouched on existing badges):

    id_tag,holder,email,reference,group,status,valid_from,valid_until,vip,parent_id_tag,chargers,zones

- `id_tag` identifies the badge (ignoring case); 1–20 printable ASCII characters.
- `group` is the name of an existing badge group (or empty).
- `status` is `accepted` or `blocked`.
- `valid_from` / `valid_until`: ISO 8601 date-time (`2026-01-31T08:00:00+01:00`; no offset =
  site time zone) or a date (`2026-01-31`: from the start of that day / until the end of it).
- `vip`: yes/no (also true/false, 1/0; empty = no).
- `chargers` / `zones`: charge point ids / zone names separated by `|` (empty = everywhere).

Every problem is reported with its line number and reason, and nothing is written when there
is one, unless the import is told to skip invalid rows (then the valid rows are written and
the others listed).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models import Model
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from import_export import fields, resources, widgets
from import_export.instance_loaders import BaseInstanceLoader
from import_export.results import Result, RowResult

from badges.models import ID_TAG_MAX_LENGTH, Badge, BadgeGroup, BadgeStatus
from badges.services import badges_changed
from chargers.models import Charger
from evce import clock
from loadmgmt.models import Zone

COLUMNS = [
    "id_tag", "holder", "email", "reference", "group", "status", "valid_from", "valid_until", "vip",
    "parent_id_tag", "chargers", "zones",
]
LIST_SEPARATOR = "|"
_TRUE = {"yes", "true", "1", "y", "on"}
_FALSE = {"no", "false", "0", "n", "off", ""}


def check_id_tag(value: str, what: str = "id tag") -> str:
    if not value:
        raise ValueError(f"{what} is empty")
    if len(value) > ID_TAG_MAX_LENGTH:
        raise ValueError(f"{what} {value!r} is {len(value)} characters long; OCPP allows at most {ID_TAG_MAX_LENGTH}")
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"{what} {value!r} must be printable ASCII (OCPP CiString)")
    return value


class IdTagWidget(widgets.CharWidget):
    def __init__(self, *, required: bool, what: str) -> None:
        super().__init__()
        self.required = required
        self.what = what

    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> str:
        text = "" if value is None else str(value).strip()
        if not text and not self.required:
            return ""
        return check_id_tag(text, self.what)


class StrictBooleanWidget(widgets.Widget):
    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> bool:
        text = "" if value is None else str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{value!r} is not yes or no")

    def render(self, value: Any, obj: Any = None, **kwargs: Any) -> str:
        return "yes" if value else "no"


class StatusWidget(widgets.Widget):
    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> str:
        text = "" if value is None else str(value).strip().lower()
        if not text:
            return BadgeStatus.ACCEPTED
        if text not in BadgeStatus.values:
            raise ValueError(f"status {value!r} is not one of: {', '.join(BadgeStatus.values)}")
        return text

    def render(self, value: Any, obj: Any = None, **kwargs: Any) -> str:
        return str(value or "")


class MomentWidget(widgets.Widget):
    """ISO 8601 date-time, or a date meaning the start (`end_of_day` False) or end of that day."""

    def __init__(self, *, end_of_day: bool) -> None:
        super().__init__()
        self.end_of_day = end_of_day

    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> dt.datetime | None:
        if isinstance(value, dt.datetime):
            return value if timezone.is_aware(value) else timezone.make_aware(value)
        text = "" if value is None else str(value).strip()
        if not text:
            return None
        try:
            # A bare date first: Python also reads "2026-01-31" as a date-time at midnight.
            day = parse_date(text)
            moment = None if day else parse_datetime(text)
        except ValueError:
            moment = day = None
        if day is not None:
            if self.end_of_day:
                day += dt.timedelta(days=1)
            return timezone.make_aware(dt.datetime.combine(day, dt.time.min))
        if moment is not None:
            return moment if timezone.is_aware(moment) else timezone.make_aware(moment)
        raise ValueError(f"bad date {text!r} (use YYYY-MM-DD or an ISO 8601 date-time)")

    def render(self, value: Any, obj: Any = None, **kwargs: Any) -> str:
        return "" if value is None else timezone.localtime(value).isoformat()


class NamedWidget(widgets.ForeignKeyWidget):
    """A foreign key given by a name; the names are loaded once per import."""

    def __init__(self, model: type[Model], field: str, what: str) -> None:
        super().__init__(model, field)
        self.what = what
        self.by_name: dict[str, Model] | None = None

    def lookup(self, name: str) -> Model:
        if self.by_name is None:
            self.by_name = {str(getattr(obj, self.field)): obj for obj in self.model.objects.all()}
        try:
            return self.by_name[name]
        except KeyError:
            raise ValueError(f"unknown {self.what} {name!r}") from None

    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> Model | None:
        name = "" if value is None else str(value).strip()
        return self.lookup(name) if name else None


class NamedListWidget(widgets.ManyToManyWidget):
    """Many-to-many given as names separated by `|`; unknown names are row errors."""

    def __init__(self, model: type[Model], field: str, what: str) -> None:
        super().__init__(model, separator=LIST_SEPARATOR, field=field)
        self.single = NamedWidget(model, field, what)

    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> list[Model]:
        text = "" if value is None else str(value)
        names = [name.strip() for name in text.split(self.separator) if name.strip()]
        return [self.single.lookup(name) for name in names]

    def render(self, value: Any, obj: Any = None, **kwargs: Any) -> str:
        if value is None:
            return ""
        # Just imported: the values written, without a query per row for the preview's diff.
        imported = getattr(getattr(value, "instance", None), "_imported_rights", {})
        items = imported.get(value.prefetch_cache_name)
        if items is None:
            items = value.all()
        return self.separator.join(sorted(str(getattr(item, self.field)) for item in items))


class CaseInsensitiveLoader(BaseInstanceLoader):
    """Finds the existing badges of a file in a few queries, matching id tags ignoring case."""

    def __init__(self, resource: BadgeResource, dataset: Any = None) -> None:
        super().__init__(resource, dataset)
        keys = []
        if dataset is not None and "id_tag" in (dataset.headers or []):
            keys = sorted({str(value or "").strip().lower() for value in dataset["id_tag"]})
        self.by_key: dict[str, Badge] = {}
        for start in range(0, len(keys), 5000):
            chunk = keys[start : start + 5000]
            found = Badge.objects.annotate(key=Lower("id_tag")).filter(key__in=chunk).prefetch_related(
                "chargers", "zones")
            for badge in found:
                self.by_key[badge.id_tag.lower()] = badge

    def get_instance(self, row: dict[str, Any]) -> Badge | None:
        return self.by_key.get(str(row.get("id_tag") or "").strip().lower())


@dataclass(frozen=True)
class RowProblem:
    line: int  # line of the file, the header being line 1
    id_tag: str
    messages: tuple[str, ...]

    def __str__(self) -> str:
        tag = f" ({self.id_tag})" if self.id_tag else ""
        return f"line {self.line}{tag}: " + "; ".join(self.messages)


def _messages(error: ValidationError) -> tuple[str, ...]:
    if hasattr(error, "error_dict"):
        return tuple(
            (message if name == NON_FIELD_ERRORS else f"{name}: {message}")
            for name, errors in error.message_dict.items()
            for message in errors
        )
    return tuple(error.messages)


class BadgeImportResult(Result):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped: list[RowProblem] = []
        self.id_tags: dict[int, str] = {}

    def problems(self) -> list[RowProblem]:
        """Every row problem with its file line, plus those skipped in skip-invalid mode."""
        found = list(self.skipped)
        for row in self.invalid_rows:
            found.append(RowProblem(row.number + 1, self.id_tags.get(row.number, ""), _messages(row.error)))
        for number, errors in self.row_errors():
            found.append(RowProblem(number + 1, self.id_tags.get(number, ""), tuple(str(e.error) for e in errors)))
        return sorted(found, key=lambda problem: problem.line)

    def file_errors(self) -> list[str]:
        return [str(error.error) for error in self.base_errors]


class BadgeResource(resources.ModelResource):
    id_tag = fields.Field("id_tag", "id_tag", IdTagWidget(required=True, what="id tag"))
    holder = fields.Field("holder", "holder", widgets.CharWidget())
    email = fields.Field("email", "email", widgets.CharWidget())
    reference = fields.Field("reference", "reference", widgets.CharWidget())
    group = fields.Field("group", "group", NamedWidget(BadgeGroup, "name", "group"))
    status = fields.Field("status", "status", StatusWidget())
    valid_from = fields.Field("valid_from", "valid_from", MomentWidget(end_of_day=False))
    valid_until = fields.Field("expires_at", "valid_until", MomentWidget(end_of_day=True))
    vip = fields.Field("vip", "vip", StrictBooleanWidget())
    parent_id_tag = fields.Field("parent_id_tag", "parent_id_tag", IdTagWidget(required=False, what="parent id tag"))
    chargers = fields.Field("chargers", "chargers", NamedListWidget(Charger, "charge_point_id", "charger"))
    zones = fields.Field("zones", "zones", NamedListWidget(Zone, "name", "zone"))

    class Meta:
        model = Badge
        fields = COLUMNS
        import_order = export_order = COLUMNS
        import_id_fields = ["id_tag"]
        instance_loader_class = CaseInsensitiveLoader
        clean_model_instances = True
        skip_unchanged = False
        report_skipped = True

    def __init__(self, *, skip_invalid: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.skip_invalid = skip_invalid
        self._first_line: dict[str, int] = {}
        self._duplicate_of: dict[int, tuple[str, int]] = {}
        # Fresh name caches for every import: groups, chargers and zones may have changed.
        self.fields["group"].widget = NamedWidget(BadgeGroup, "name", "group")
        self.fields["chargers"].widget = NamedListWidget(Charger, "charge_point_id", "charger")
        self.fields["zones"].widget = NamedListWidget(Zone, "name", "zone")

    def get_result_class(self) -> type[Result]:
        return BadgeImportResult

    def get_queryset(self) -> Any:
        return Badge.objects.select_related("group").prefetch_related("chargers", "zones")

    # --- import ----------------------------------------------------------------------------

    def before_import(self, dataset: Any, **kwargs: Any) -> None:
        """Whole-file checks: known columns, and id tags that appear twice (ignoring case)."""
        headers = [str(header or "").strip() for header in dataset.headers or []]
        unknown = [header for header in headers if header not in COLUMNS]
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise ValueError(f"unknown column(s) {names}; the columns are: {', '.join(COLUMNS)}")
        dataset.headers = headers
        if "id_tag" not in headers:
            return
        for number, value in enumerate(dataset["id_tag"], 1):
            key = str(value or "").strip().lower()
            if not key:
                continue
            if key in self._first_line:
                self._duplicate_of[number] = (str(value).strip(), self._first_line[key])
            else:
                self._first_line[key] = number + 1

    def import_instance(self, instance: Badge, row: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, Any] = {}
        try:
            super().import_instance(instance, row, **kwargs)
        except ValidationError as error:
            errors = error.update_error_dict(errors)
        # Many-to-many columns are saved after the badge: check them first so that a bad
        # name is a row error and not a half-written badge.
        for name in ("chargers", "zones"):
            if name in row:
                try:
                    self.fields[name].clean(row)
                except ValueError as error:
                    errors[name] = [str(error)]
        duplicate = self._duplicate_of.get(kwargs.get("row_number", 0))
        if duplicate is not None:
            tag, first = duplicate
            errors.setdefault("id_tag", []).append(f"duplicate id tag {tag!r} (already on line {first})")
        if errors:
            raise ValidationError(errors)

    def validate_instance(self, instance: Badge, import_validation_errors: Any = None,
                          validate_unique: bool = True) -> None:
        """Model validation without per-row queries: the loader and the duplicate check cover
        uniqueness, and the group widget only returns existing groups."""
        errors = dict(import_validation_errors or {})
        try:
            instance.full_clean(exclude=[*errors, "group"], validate_unique=False, validate_constraints=False)
        except ValidationError as error:
            errors = error.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    def save_m2m(self, instance: Badge, row: dict[str, Any], **kwargs: Any) -> None:
        if self._is_dry_run(kwargs) and not self._is_using_transactions(kwargs):
            return
        for name in ("chargers", "zones"):
            if name not in row:
                continue
            values = self.fields[name].clean(row)
            instance._imported_rights = {**getattr(instance, "_imported_rights", {}), name: values}
            if not values and not getattr(instance, "_was_existing", False):
                continue  # a new badge without rights: nothing to write
            related = getattr(instance, name)
            if {item.pk for item in related.all()} != {item.pk for item in values}:  # prefetched by the loader
                related.set(values)

    def after_init_instance(self, instance: Badge, new: bool, row: dict[str, Any], **kwargs: Any) -> None:
        instance._was_existing = not new
        if not new:
            # The rights as loaded (prefetched): the preview's "before" side reads them here,
            # since the copy it takes of the badge would query them again.
            instance._imported_rights = {
                name: list(getattr(instance, name).all()) for name in ("chargers", "zones")
            }

    def import_row(self, row: dict[str, Any], instance_loader: Any, **kwargs: Any) -> RowResult:
        result = super().import_row(row, instance_loader, **kwargs)
        self.id_tags[kwargs.get("row_number", 0)] = str(row.get("id_tag") or "").strip()
        if self.skip_invalid and result.import_type in {RowResult.IMPORT_TYPE_INVALID, RowResult.IMPORT_TYPE_ERROR}:
            line = kwargs.get("row_number", 0) + 1
            if result.validation_error is not None:
                messages = _messages(result.validation_error)
            else:
                messages = tuple(str(error.error) for error in result.errors)
            self.skipped.append(RowProblem(line, str(row.get("id_tag") or "").strip(), messages))
            result.import_type = RowResult.IMPORT_TYPE_SKIP
            result.validation_error = None
            result.errors = []
        return result

    def import_data(self, dataset: Any, *args: Any, **kwargs: Any) -> BadgeImportResult:
        self.skipped: list[RowProblem] = []
        self.id_tags: dict[int, str] = {}
        self._first_line, self._duplicate_of = {}, {}
        result = super().import_data(dataset, *args, **kwargs)
        result.skipped = list(self.skipped)
        result.id_tags = dict(self.id_tags)
        return result

    def after_import(self, dataset: Any, result: Any, **kwargs: Any) -> None:
        written = result.totals.get(RowResult.IMPORT_TYPE_NEW, 0) + result.totals.get(RowResult.IMPORT_TYPE_UPDATE, 0)
        if not kwargs.get("dry_run") and written and not result.has_errors():
            badges_changed(now=clock.now())


class BadgeImportResource(BadgeResource):
    """For scripts and big files: the same rules without the per-row HTML diff of the admin preview."""

    class Meta(BadgeResource.Meta):
        skip_diff = True
