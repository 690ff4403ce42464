from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

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


class ConnectorInline(admin.TabularInline):
    model = Connector
    extra = 0
    readonly_fields = ["connector_id", "status", "error_code", "info", "vendor_error_code", "status_at"]
    exclude = ["vendor_id"]
    can_delete = False


class ConfigurationKeyInline(admin.TabularInline):
    model = ConfigurationKey
    extra = 0
    readonly_fields = ["key", "value", "readonly", "last_change_status", "updated_at"]
    can_delete = False


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
        return fields + ["charge_point_id"] if obj else fields

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


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    list_display = ["charger", "connector_id", "status", "error_code", "info", "status_at"]
    list_filter = ["status", "error_code"]
    search_fields = ["charger__charge_point_id"]
    readonly_fields = [f.name for f in Connector._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # connectors are what chargers report; an empty add form could only fail


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
