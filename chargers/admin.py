from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from chargers import services
from chargers.identity import BadIdentity, check_identity
from chargers.models import (
    AutoConfigurationKey,
    Charger,
    ConfigurationKey,
    Connector,
    OcppMessage,
    RegistrationStatus,
)
from chargers.tasks import configure_charger

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec  # the stubs' name for what get_fieldsets returns


class ChargerForm(forms.ModelForm):
    new_password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Set an HTTP Basic password (user = charge point id). Leave empty to keep the current one.",
    )
    clear_password = forms.BooleanField(required=False, help_text="Remove the password (no authentication).")

    class Meta:
        model = Charger
        fields = [
            "charge_point_id", "registration_status", "heartbeat_interval_s", "zone", "rated_max_current_a",
            "phases", "supply_phase", "min_current_a", "vip", "notes",
        ]

    def clean_charge_point_id(self) -> str:
        """The grammar the websocket handshake enforces: an id it would refuse can never connect."""
        value = str(self.cleaned_data["charge_point_id"])
        try:
            check_identity(value)
        except BadIdentity as bad:
            raise forms.ValidationError(str(bad).capitalize() + ".") from None
        return value

    def save(self, commit: bool = True) -> Charger:
        charger = super().save(commit=False)
        if self.cleaned_data.get("clear_password"):
            charger.set_password(None)
        elif self.cleaned_data.get("new_password"):
            charger.set_password(self.cleaned_data["new_password"])
        if commit:
            charger.save()
        return charger


OFFLINE_STATUS = "Unavailable (offline)"


def shown_status(connector: Connector) -> str:
    """A disconnected charger's last status is history, not its state (it may say Available)."""
    return connector.status if connector.charger.connected else OFFLINE_STATUS


class ConnectorInline(admin.TabularInline):
    model = Connector
    extra = 0
    fields = readonly_fields = ("connector_id", "current_status", "error_code", "info", "vendor_error_code",
                                "status_at")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # connectors are what chargers report

    @admin.display(description="status")
    def current_status(self, obj: Connector) -> str:
        return shown_status(obj)


class ConfigurationKeyInline(admin.TabularInline):
    model = ConfigurationKey
    extra = 0
    readonly_fields = ["key", "value", "readonly", "last_change_status", "updated_at"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # keys are read back from the charger (dashboard: GetConfiguration / ChangeConfiguration)


@admin.register(Charger)
class ChargerAdmin(admin.ModelAdmin):
    form = ChargerForm
    list_display = [
        "charge_point_id", "registration_status", "connected", "last_seen", "zone", "vip", "vendor", "model",
        "firmware_version", "rated_max_current_a", "phases",
    ]
    list_filter = ["registration_status", "connected", "zone", "vip", "vendor", "phases"]
    search_fields = ["charge_point_id", "vendor", "model", "serial_number", "notes"]
    readonly_fields = [
        "connected", "connected_at", "last_seen", "last_boot_at", "vendor", "model", "serial_number",
        "charge_box_serial_number", "firmware_version", "meter_type", "meter_serial_number", "iccid", "imsi",
        "diagnostics_status", "firmware_status", "created_at", "has_password",
    ]
    inlines = [ConnectorInline, ConfigurationKeyInline]
    actions = ["accept_chargers", "reject_chargers", "reapply_configuration"]

    def get_readonly_fields(self, request: HttpRequest, obj: Charger | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        return fields + ["charge_point_id", *LIVE_FIELDS] if obj else fields

    def get_fieldsets(self, request: HttpRequest, obj: Charger | None = None) -> _FieldsetSpec:
        """An existing charger's page opens with what it draws and may draw now, then its configuration."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        rest = [name for name in fieldsets[0][1]["fields"] if name not in LIVE_FIELDS and name != "charge_point_id"]
        rest.insert(0, "charge_point_id")  # read-only once created, yet what names the charger: first
        return [("Now", {"fields": LIVE_FIELDS}), (None, {"fields": rest})]

    @admin.display(description="drawing now")
    def live_draw(self, obj: Charger) -> str | SafeString:
        tile = _tile_of(obj)
        if tile is None:
            return "–"
        lines = [(f"#{c.connector_id}", _draw_text(c.session)) for c in tile.connectors if c.session is not None]
        if not lines:
            return "No session running." if tile.online else "Offline: no session running."
        return format_html_join(SafeString("<br>"), "{}: {}", lines)

    @admin.display(description="limit (in force / pending / wanted, reason)")
    def live_limit(self, obj: Charger) -> str | SafeString:
        tile = _tile_of(obj)
        if tile is None:
            return "–"
        rows = [(f"#{c.connector_id}", _limit_text(c.limit)) for c in tile.connectors
                if c.session is not None and c.limit is not None]
        if tile.default_limit is not None:
            rows.append(("safe default (#0)", _limit_text(tile.default_limit)))
        if not rows:
            return "The control loop has not sent this charger a limit yet."
        return format_html_join(SafeString("<br>"), "{}: {}", rows)

    def save_model(self, request: HttpRequest, obj: Charger, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "registration_status" in form.changed_data:
            services.registration_changed(charger_pks=[obj.pk], status=obj.registration_status)

    @admin.display(boolean=True, description="password set")
    def has_password(self, obj: Charger) -> bool:
        return bool(obj.password_hash)

    @admin.action(description="Accept selected chargers (and configure the connected ones)", permissions=["change"])
    def accept_chargers(self, request: HttpRequest, queryset: QuerySet[Charger]) -> None:
        pks = list(queryset.values_list("pk", flat=True))
        count = services.chargers_set_registration(charger_pks=pks, status=RegistrationStatus.ACCEPTED)
        for pk in queryset.filter(connected=True).values_list("pk", flat=True):
            configure_charger.delay(pk)
        self.message_user(request, f"{count} charger(s) accepted.", messages.SUCCESS)

    @admin.action(description="Reject selected chargers", permissions=["change"])
    def reject_chargers(self, request: HttpRequest, queryset: QuerySet[Charger]) -> None:
        pks = list(queryset.values_list("pk", flat=True))
        count = services.chargers_set_registration(charger_pks=pks, status=RegistrationStatus.REJECTED)
        self.message_user(request, f"{count} charger(s) rejected.", messages.SUCCESS)

    @admin.action(description="Re-apply automatic configuration (connected chargers)", permissions=["change"])
    def reapply_configuration(self, request: HttpRequest, queryset: QuerySet[Charger]) -> None:
        pks = list(queryset.filter(connected=True).values_list("pk", flat=True))
        for pk in pks:
            configure_charger.delay(pk)
        self.message_user(request, f"Configuration queued for {len(pks)} connected charger(s).")


LIVE_FIELDS = ("live_draw", "live_limit")


def _tile_of(charger: Charger) -> Any:
    from dashboard.selectors import charger_tiles  # noqa: PLC0415 - the dashboard reads what the admin shows
    from evce import clock  # noqa: PLC0415

    tiles = charger_tiles(now=clock.now(), charger_pks=[charger.pk])
    return tiles[0] if tiles else None


def _amps(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} A"


def _draw_text(session: Any) -> str:
    """"7.4 kW, 10.7/10.6/10.8 A (L1/L2/L3), 3.20 kWh so far, session 12 (holder)"."""
    power = "no recent meter value" if session.power_w is None else f"{session.power_w / 1000:.1f} kW"
    amps = "" if session.current_a is None else ", {:.1f}/{:.1f}/{:.1f} A (L1/L2/L3)".format(*session.current_a)
    energy = "–" if session.energy_wh is None else f"{session.energy_wh / 1000:.2f}"
    who = session.holder or session.id_tag
    return f"{power}{amps}, {energy} kWh so far, session {session.pk} ({who}{', VIP' if session.vip else ''})"


def _limit_text(limit: Any) -> str:
    in_force = "paused" if limit.in_force_paused else _amps(limit.in_force_a)
    pending = "paused" if limit.pending_paused and limit.pending_a is not None else _amps(limit.pending_a)
    wanted = "paused" if limit.wanted_paused else _amps(limit.wanted_a)
    text = f"in force {in_force} / pending {pending} / wanted {wanted}"
    if limit.reason:
        text += f" — {limit.reason}"
    if limit.problem:
        text += f" — ⚠ {limit.problem}"
    return text


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    list_display = ["charger", "connector_id", "current_status", "error_code", "info", "status_at"]
    list_select_related = ["charger"]
    list_filter = ["status", "error_code"]
    search_fields = ["charger__charge_point_id"]
    readonly_fields = [f.name for f in Connector._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # connectors are what chargers report; an empty add form could only fail

    @admin.display(description="status", ordering="status")
    def current_status(self, obj: Connector) -> str:
        return shown_status(obj)


@admin.register(AutoConfigurationKey)
class AutoConfigurationKeyAdmin(admin.ModelAdmin):
    list_display = ["key", "value", "enabled", "description"]
    list_editable = ["value", "enabled"]
    search_fields = ["key", "description"]


@admin.register(ConfigurationKey)
class ConfigurationKeyAdmin(admin.ModelAdmin):
    list_display = ["charger", "key", "value", "readonly", "last_change_status", "updated_at"]
    list_filter = ["last_change_status", "readonly", "key"]
    search_fields = ["charger__charge_point_id", "key", "value"]
    readonly_fields = ["charger", "key", "value", "readonly", "last_change_status", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are read back from the chargers; every field is read-only


@admin.register(OcppMessage)
class OcppMessageAdmin(admin.ModelAdmin):
    list_display = ["timestamp", "charge_point_id", "direction", "message_type", "action", "unique_id", "error"]
    list_filter = ["direction", "message_type", "action"]
    search_fields = ["charge_point_id", "unique_id", "action", "error"]
    date_hierarchy = "timestamp"
    readonly_fields = [f.name for f in OcppMessage._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the log is evidence: only the retention (age and row cap) prunes it
