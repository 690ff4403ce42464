from django.contrib import admin

from badges.models import Badge


@admin.register(Badge)
class BadgeAdmin(admin.ModelAdmin):
    list_display = ["id_tag", "holder", "status", "vip", "expires_at", "updated_at"]
    list_filter = ["status", "vip"]
    search_fields = ["id_tag", "holder"]
    readonly_fields = ["created_at", "updated_at"]
