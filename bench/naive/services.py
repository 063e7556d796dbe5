"""What the article's view does: create the order and its items in one transaction, and nothing else."""

from decimal import Decimal

from django.conf import settings
from django.db import transaction

from orders.models import Order, OrderItem, Product


@transaction.atomic
def create_order(*, email: str, region: str, items: list[dict], payment_token: str) -> Order:
    products = Product.objects.in_bulk([item["sku"] for item in items], field_name="sku")
    total = sum((products[item["sku"]].price * item["quantity"] for item in items), Decimal("0.00"))
    order = Order.objects.create(
        email=email, region=region, total=total, currency=settings.SHOP_CURRENCY, payment_token=payment_token
    )  # post_save fires here: the signal schedules processing for after the commit
    OrderItem.objects.bulk_create(
        OrderItem(
            order=order,
            product=products[item["sku"]],
            quantity=item["quantity"],
            unit_price=products[item["sku"]].price,
        )
        for item in items
    )
    return order
