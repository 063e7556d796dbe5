"""Orders in the admin: find them by status, region and date, read their timeline, retry or cancel them. Products:
edit their name, price and image (its thumbnail follows from the heavy pool) through the catalog's services."""

from django import forms
from django.contrib import admin
from django.db.models import Model, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils.html import format_html

from core.admin import ReadOnlyTabularInline, ServiceOwnedModelAdmin, run_service_for_each
from orders import catalog, services
from orders.exceptions import InvalidProductImage
from orders.models import Order, OrderEvent, OrderItem, Product


class OrderItemInline(ReadOnlyTabularInline):
    model = OrderItem
    fields = readonly_fields = ("product", "quantity", "unit_price")


class OrderEventInline(ReadOnlyTabularInline):
    model = OrderEvent
    verbose_name = "timeline entry"
    verbose_name_plural = "timeline"
    fields = readonly_fields = ("created_at", "status", "note", "worker")
    ordering = ["created_at", "id"]


@admin.register(Order)
class OrderAdmin(ServiceOwnedModelAdmin):
    list_display = [
        "id", "email", "region", "processed_in", "status", "total", "currency", "attempts", "created_at", "updated_at"
    ]  # fmt: skip
    list_filter = ["status", "region", "processed_in", "created_at"]
    search_fields = ["=id", "email"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    readonly_fields = [
        "id",
        "email",
        "region",
        "processed_in",
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


class ProductForm(forms.ModelForm):
    class Meta:
        model = Product
        fields = ["name", "price", "image"]
        help_texts = {"image": "PNG or JPEG; its thumbnail (300x300 at most) is made in the background."}

    def clean_image(self):
        image = self.cleaned_data.get("image")
        if image and "image" in self.changed_data:  # a new upload, checked as the service will check it
            try:
                catalog.check_product_image(image=image)
            except InvalidProductImage as refused:
                raise forms.ValidationError(refused.fields["image"], code=refused.code) from None
        return image


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    """Name, price and image are edited here, each through its service; SKU and stock are not (seed_catalog and the
    order workflow own them), and products are neither added nor deleted here."""

    form = ProductForm
    list_display = ["sku", "name", "price", "currency", "stock", "thumbnail_preview", "thumbnail_status"]
    list_filter = ["thumbnail_status"]
    search_fields = ["sku", "name"]
    ordering = ["sku"]
    fields = [
        "sku",
        "name",
        "price",
        "currency",
        "stock",
        "image",
        "thumbnail_preview",
        "thumbnail_status",
        "thumbnail_size",
        "thumbnail_finished_at",
        "thumbnail_error_code",
        "thumbnail_error_reason",
    ]
    readonly_fields = [
        "sku",
        "currency",
        "stock",
        "thumbnail_preview",
        "thumbnail_status",
        "thumbnail_size",
        "thumbnail_finished_at",
        "thumbnail_error_code",
        "thumbnail_error_reason",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Product, form: ModelForm, change: bool) -> None:
        # The admin's change view runs in one transaction: both services commit together, the thumbnail's outbox
        # row with them.
        catalog.update_product(product_id=obj.pk, name=form.cleaned_data["name"], price=form.cleaned_data["price"])
        if "image" in form.changed_data:
            catalog.set_product_image(product_id=obj.pk, image=form.cleaned_data["image"] or None)

    @admin.display(description="thumbnail")
    def thumbnail_preview(self, product: Product) -> str:
        if not product.has_thumbnail:
            return "-"
        return format_html(
            '<img src="{}" width="{}" height="{}" alt="" style="max-width: 100px; height: auto">',
            product.thumbnail.url,
            product.thumbnail_width,
            product.thumbnail_height,
        )

    @admin.display(description="thumbnail size")
    def thumbnail_size(self, product: Product) -> str:
        return f"{product.thumbnail_width}x{product.thumbnail_height}" if product.has_thumbnail else "-"
