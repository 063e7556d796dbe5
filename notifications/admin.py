from django.contrib import admin

from core.admin import ServiceOwnedModelAdmin
from notifications.models import Notification


@admin.register(Notification)
class NotificationAdmin(ServiceOwnedModelAdmin):
    list_display = ["order_id", "kind", "channel", "recipient", "status", "attempts", "sent_at", "created_at"]
    list_filter = ["status", "channel", "kind", "created_at"]
    search_fields = ["=order_id", "recipient"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "order_id",
        "channel",
        "kind",
        "recipient",
        "status",
        "attempts",
        "last_error",
        "claimed_at",
        "sent_at",
        "created_at",
    ]
