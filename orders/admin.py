"""Orders in the admin: find them by status, region and date, read their timeline, retry or cancel them."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import ReadOnlyTabularInline, ServiceOwnedModelAdmin, run_service_for_each
from orders import services
from orders.models import Order, OrderEvent, OrderItem


class OrderItemInline(ReadOnlyTabularInline):
    model = OrderItem
    fields = readonly_fields = ("product", "quantity", "unit_price")


class OrderEventInline(ReadOnlyTabularInline):
    model = OrderEvent
    verbose_name = "timeline entry"
    verbose_name_plural = "timeline"
    fields = readonly_fields = ("created_at", "status", "note")
    ordering = ["created_at", "id"]


@admin.register(Order)
class OrderAdmin(ServiceOwnedModelAdmin):
    list_display = ["id", "email", "region", "status", "total", "currency", "attempts", "created_at", "updated_at"]
    list_filter = ["status", "region", "created_at"]
    search_fields = ["=id", "email"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    readonly_fields = [
        "id",
        "email",
        "region",
        "status",
        "total",
        "currency",
        "payment_token",
        "payment_reference",
        "push_topic",
        "failure_reason",
        "attempts",
        "created_at",
        "updated_at",
    ]
    inlines = [OrderItemInline, OrderEventInline]
    actions = ["retry_failed_orders", "cancel_pending_orders"]

    @admin.action(description="Retry the selected failed orders", permissions=["change"])
    def retry_failed_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        # Through the outbox, as any retry: the order is reopened and its processing enqueued in one transaction.
        run_service_for_each(
            self,
            request,
            queryset,
            lambda order: services.retry_order(order_id=order.pk),
            done_message="Scheduled {count} order(s) for processing again.",
        )

    @admin.action(description="Cancel the selected pending orders", permissions=["change"])
    def cancel_pending_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        run_service_for_each(
            self,
            request,
            queryset,
            lambda order: services.cancel_order(order_id=order.pk),
            done_message="Cancelled {count} order(s).",
        )
