"""The product catalog: loading products, as `manage.py seed_catalog` does for the demo shop."""

from django.db import transaction

from orders.models import Product


@transaction.atomic
def seed_catalog(*, products: list[dict]) -> tuple[int, int]:
    """Create or update products by SKU; stock is set only for new products. Returns (created, updated)."""
    created = 0
    for product in products:
        _, was_created = Product.objects.update_or_create(
            sku=product["sku"],
            defaults={"name": product["name"], "price": product["price"], "currency": product["currency"]},
            create_defaults={**product},
        )
        created += was_created
    return created, len(products) - created
