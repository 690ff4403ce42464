from django.contrib import admin

from transactions.models import MeterSample, Transaction


class MeterSampleInline(admin.TabularInline):
    model = MeterSample
    extra = 0
    can_delete = False
    fields = ["timestamp", "measurand", "phase", "value", "unit", "context"]
    readonly_fields = fields
    max_num = 0


@admin.register(Transaction)
class TransactionAdmin(admin.ModelAdmin):
    list_display = [
        "id", "charger", "connector_id", "id_tag", "id_tag_status", "state", "start_time", "stop_time",
        "energy_kwh", "stop_reason",
    ]
    list_filter = ["state", "stop_reason", "charger"]
    search_fields = ["id_tag", "charger__charge_point_id", "=id"]
    date_hierarchy = "start_time"
    readonly_fields = [f.name for f in Transaction._meta.fields]
    inlines = [MeterSampleInline]

    @admin.display(description="energy (kWh)")
    def energy_kwh(self, obj: Transaction) -> str:
        return "" if obj.energy_wh is None else f"{obj.energy_wh / 1000:.3f}"


@admin.register(MeterSample)
class MeterSampleAdmin(admin.ModelAdmin):
    list_display = ["timestamp", "charger", "connector_id", "transaction", "measurand", "phase", "value", "unit"]
    list_filter = ["measurand", "phase", "context"]
    search_fields = ["charger__charge_point_id", "=transaction__id"]
    readonly_fields = [f.name for f in MeterSample._meta.fields]
