from django.db.models import Prefetch, QuerySet

from orders.exceptions import OrderNotFound
from orders.models import Order, OrderEvent, OrderItem, Product


def get_order(*, order_id) -> Order:
    """The order with its items (and their products) and its status timeline."""
    order = (
        Order.objects.prefetch_related(
            Prefetch("items", queryset=OrderItem.objects.select_related("product").order_by("product__sku")),
            Prefetch("events", queryset=OrderEvent.objects.order_by("created_at", "id")),
        )
        .filter(pk=order_id)
        .first()
    )
    if order is None:
        raise OrderNotFound(f"Order {order_id} does not exist.")
    return order


def list_orders(*, status: str | None = None) -> QuerySet[Order]:
    orders = Order.objects.order_by("-created_at")
    return orders.filter(status=status) if status else orders


def list_products() -> QuerySet[Product]:
    return Product.objects.order_by("sku")
