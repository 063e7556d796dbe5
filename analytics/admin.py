from django.contrib import admin

from analytics.models import Event
from core.admin import ServiceOwnedModelAdmin


@admin.register(Event)
class EventAdmin(ServiceOwnedModelAdmin):
    list_display = ["event_type", "order_id", "occurred_at", "recorded_at"]
    list_filter = ["event_type", "occurred_at"]
    search_fields = ["=order_id", "=event_id"]
    date_hierarchy = "occurred_at"
    readonly_fields = ["event_id", "event_type", "order_id", "data", "occurred_at", "recorded_at"]
