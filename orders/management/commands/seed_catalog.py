from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand

from orders.catalog import seed_catalog

DEMO_CATALOG = [
    # sku, name, price, stock
    ("MUG-001", "Stoneware mug", Decimal("12.50"), 500),
    ("TEE-001", "Organic cotton T-shirt", Decimal("24.00"), 300),
    ("BAG-001", "Canvas tote bag", Decimal("15.90"), 400),
    ("BOOK-001", "Field notes notebook", Decimal("8.75"), 1000),
    ("CAP-001", "Wool cap", Decimal("19.00"), 200),
    ("LAMP-001", "Desk lamp", Decimal("49.00"), 50),
]


class Command(BaseCommand):
    help = "Load the demo catalog. Idempotent: existing products keep their stock; names and prices are updated."

    def handle(self, *args, **options) -> None:
        created, updated = seed_catalog(
            products=[
                {"sku": sku, "name": name, "price": price, "currency": settings.SHOP_CURRENCY, "stock": stock}
                for sku, name, price, stock in DEMO_CATALOG
            ]
        )
        self.stdout.write(self.style.SUCCESS(f"Catalog seeded: {created} created, {updated} updated."))
