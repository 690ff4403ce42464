"""Badges in the admin: CSV import/export, block/unblock, local list pushes, statements.

Roles (groups created by migration badges.0003): "admin" manages badges; "operator" may only
block and unblock them (an admin action) and download statements; "viewer" reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from import_export.admin import ImportExportModelAdmin
from import_export.formats.base_formats import CSV
from import_export.forms import ConfirmImportForm, ImportForm

from badges.models import Badge, BadgeGroup, BadgeStatus, LocalListState
from badges.resources import BadgeResource
from badges.services import badges_changed, badges_set_status
from badges.tasks import sync_local_lists
from chargers.models import Charger
from evce import clock
from transactions.resources import statement_dataset
from transactions.selectors import Period, badge_statement

SKIP_INVALID_HELP = (
    "Import the valid rows and skip the rows with errors (they are listed). Without this, a file with "
    "any error is not imported at all."
)


class BadgeImportForm(ImportForm):
    skip_invalid = forms.BooleanField(required=False, label="Import valid rows only", help_text=SKIP_INVALID_HELP)


class BadgeConfirmImportForm(ConfirmImportForm):
    skip_invalid = forms.BooleanField(required=False, widget=forms.HiddenInput())


class ValidityFilter(admin.SimpleListFilter):
    title = "validity"
    parameter_name = "validity"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("valid", "Valid now"), ("expired", "Expired"), ("future", "Not valid yet")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Badge]) -> QuerySet[Badge]:
        now = clock.now()
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now)
        if self.value() == "future":
            return queryset.filter(valid_from__gt=now)
        if self.value() == "valid":
            return queryset.exclude(expires_at__lte=now).exclude(valid_from__gt=now)
        return queryset


class StatementForm(forms.Form):
    first_day = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    last_day = forms.DateField(label="To (included)", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("first_day") and data.get("last_day") and data["last_day"] < data["first_day"]:
            raise forms.ValidationError("The period ends before it starts.")
        return data


def last_month() -> tuple[dt.date, dt.date]:
    first_of_this_month = timezone.localdate(clock.now()).replace(day=1)
    last_day = first_of_this_month - dt.timedelta(days=1)
    return last_day.replace(day=1), last_day


@admin.register(Badge)
class BadgeAdmin(ImportExportModelAdmin):
    resource_classes = [BadgeResource]
    import_formats = [CSV]
    export_formats = [CSV]
    import_form_class = BadgeImportForm
    confirm_form_class = BadgeConfirmImportForm
    import_template_name = "admin/badges/badge/import.html"
    list_display = ["id_tag", "holder", "group", "status", "vip", "valid_from", "expires_at", "rights", "updated_at"]
    list_filter = ["status", "vip", ValidityFilter, "group", "zones", "chargers"]
    search_fields = ["id_tag", "holder", "email", "reference", "parent_id_tag"]
    list_select_related = ["group"]
    filter_horizontal = ["chargers", "zones"]
    readonly_fields = ["created_at", "updated_at", "statement_link"]
    fieldsets = [
        (None, {"fields": ["id_tag", "holder", "email", "reference", "group", "status", "vip"]}),
        ("Validity", {"fields": ["valid_from", "expires_at", "parent_id_tag"]}),
        ("Rights (empty: every charger)", {"fields": ["chargers", "zones"]}),
        ("History", {"fields": ["statement_link", "created_at", "updated_at"]}),
    ]
    actions = ["block_badges", "unblock_badges", "push_local_lists"]

    # --- permissions -----------------------------------------------------------------------

    def has_block_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("badges.block_badge")

    def has_push_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("badges.change_localliststate")

    def has_import_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("badges.add_badge") and request.user.has_perm("badges.change_badge")

    def has_export_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    # --- display ---------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Badge]:
        return super().get_queryset(request).prefetch_related("chargers", "zones")

    @admin.display(description="may use")
    def rights(self, obj: Badge) -> str:
        names = [c.charge_point_id for c in obj.chargers.all()] + [f"zone {z.name}" for z in obj.zones.all()]
        return ", ".join(names) if names else "every charger"

    @admin.display(description="statement")
    def statement_link(self, obj: Badge) -> str:
        if obj.pk is None:
            return "-"
        url = reverse("admin:badges_badge_statement", args=[obj.pk])
        return format_html('<a href="{}">Download a statement (CSV)…</a>', url)

    # --- writes go through the services (local lists follow) --------------------------------

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        badges_changed(now=clock.now())

    def delete_model(self, request: HttpRequest, obj: Badge) -> None:
        super().delete_model(request, obj)
        badges_changed(now=clock.now())

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Badge]) -> None:
        super().delete_queryset(request, queryset)
        badges_changed(now=clock.now())

    @admin.action(description="Block selected badges", permissions=["block"])
    def block_badges(self, request: HttpRequest, queryset: QuerySet[Badge]) -> None:
        pks = list(queryset.values_list("pk", flat=True))
        count = badges_set_status(badge_pks=pks, status=BadgeStatus.BLOCKED, now=clock.now())
        self.message_user(request, f"{count} badge(s) blocked.", messages.SUCCESS)

    @admin.action(description="Unblock selected badges", permissions=["block"])
    def unblock_badges(self, request: HttpRequest, queryset: QuerySet[Badge]) -> None:
        pks = list(queryset.values_list("pk", flat=True))
        count = badges_set_status(badge_pks=pks, status=BadgeStatus.ACCEPTED, now=clock.now())
        self.message_user(request, f"{count} badge(s) unblocked.", messages.SUCCESS)

    @admin.action(description="Push local authorization lists to all connected chargers now", permissions=["push"])
    def push_local_lists(self, request: HttpRequest, queryset: QuerySet[Badge]) -> None:
        pks = list(Charger.objects.filter(connected=True, registration_status="accepted").values_list("pk", flat=True))
        sync_local_lists.delay(charger_pks=pks)
        self.message_user(request, f"Local list push queued for {len(pks)} connected charger(s).")

    # --- import: "valid rows only" ----------------------------------------------------------

    def get_import_resource_kwargs(self, request: HttpRequest, **kwargs: Any) -> dict[str, Any]:
        form = kwargs.get("form")
        skip = bool(form is not None and form.is_bound and form.is_valid() and form.cleaned_data.get("skip_invalid"))
        return {"skip_invalid": skip}

    def get_import_data_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop("form", None)
        kwargs.pop("request", None)
        # Rows that became invalid between the preview and the confirmation roll everything back.
        return {**kwargs, "use_transactions": True, "rollback_on_validation_errors": True}

    def get_confirm_form_initial(self, request: HttpRequest, import_form: Any) -> dict[str, Any]:
        initial = super().get_confirm_form_initial(request, import_form)
        if import_form is not None:
            initial["skip_invalid"] = import_form.cleaned_data.get("skip_invalid", False)
        return initial

    # --- statement download -----------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        statement = path("<path:object_id>/statement/", self.admin_site.admin_view(self.statement_view),
                         name="badges_badge_statement")
        return [statement, *super().get_urls()]

    def statement_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """A badge's sessions in a period with totals, as CSV (admins and operators)."""
        if not request.user.has_perm("badges.download_statement"):
            raise PermissionDenied
        badge = get_object_or_404(Badge, pk=object_id)
        first, last = last_month()
        form = StatementForm(request.GET or None, initial={"first_day": first, "last_day": last})
        if form.is_bound and form.is_valid():
            period = Period.of_days(form.cleaned_data["first_day"], form.cleaned_data["last_day"])
            data = statement_dataset(badge_statement(badge=badge, period=period))
            response = HttpResponse(data.export("csv"), content_type="text/csv; charset=utf-8")
            name = f"statement-{badge.id_tag}-{form.cleaned_data['first_day']}-{form.cleaned_data['last_day']}.csv"
            response["Content-Disposition"] = f'attachment; filename="{name}"'
            return response
        context = {**self.admin_site.each_context(request), "opts": self.opts, "badge": badge, "form": form,
                   "title": f"Statement of {badge}"}
        return TemplateResponse(request, "admin/badges/badge/statement.html", context)


@admin.register(BadgeGroup)
class BadgeGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "badge_count"]
    search_fields = ["name", "description"]

    @admin.display(description="badges")
    def badge_count(self, obj: BadgeGroup) -> int:
        return obj.badges.count()


@admin.register(LocalListState)
class LocalListStateAdmin(admin.ModelAdmin):
    list_display = ["charger", "status", "list_version", "entry_count", "synced_revision", "last_attempt_at",
                    "last_success_at", "last_result"]
    list_filter = ["status"]
    search_fields = ["charger__charge_point_id", "last_result"]
    readonly_fields = ["charger", "status", "list_version", "entry_count", "synced_revision", "last_attempt_at",
                       "last_success_at", "last_result"]
    exclude = ["entries"]
    actions = ["sync_now", "push_full_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Synchronise selected lists now (differential when possible)", permissions=["change"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet[LocalListState]) -> None:
        pks = list(queryset.values_list("charger_id", flat=True))
        sync_local_lists.delay(charger_pks=pks)
        self.message_user(request, f"Local list sync queued for {len(pks)} charger(s) (connected ones only).")

    @admin.action(description="Push the full list to the selected chargers now", permissions=["change"])
    def push_full_now(self, request: HttpRequest, queryset: QuerySet[LocalListState]) -> None:
        pks = list(queryset.values_list("charger_id", flat=True))
        sync_local_lists.delay(charger_pks=pks, force_full=True)
        self.message_user(request, f"Full local list push queued for {len(pks)} charger(s) (connected ones only).")
