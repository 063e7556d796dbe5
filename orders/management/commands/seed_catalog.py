from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from orders.catalog import seed_catalog

# Drawn by scripts/draw_demo_pictures.py; their licence (CC0) is in the README beside them.
DEMO_PICTURES = Path(__file__).resolve().parents[2] / "fixtures" / "products"
DEMO_CATALOG = [
    # sku, name, price, stock, picture
    ("MUG-001", "Stoneware mug", Decimal("12.50"), 500, "mug.jpg"),
    ("TEE-001", "Organic cotton T-shirt", Decimal("24.00"), 300, "t-shirt.jpg"),
    ("BAG-001", "Canvas tote bag", Decimal("15.90"), 400, "tote-bag.jpg"),
    ("BOOK-001", "Field notes notebook", Decimal("8.75"), 1000, "notebook.png"),
    ("CAP-001", "Wool cap", Decimal("19.00"), 200, "cap.jpg"),
    ("LAMP-001", "Desk lamp", Decimal("49.00"), 50, "desk-lamp.png"),
]


class Command(BaseCommand):
    help = (
        "Load the demo catalog. Idempotent: existing products keep their stock and their image; names and prices are "
        "updated. A product without an image gets its demo picture, and its thumbnail is scheduled on the heavy queue."
    )

    def handle(self, *args, **options) -> None:
        created, updated = seed_catalog(
            products=[
                {
                    "sku": sku,
                    "name": name,
                    "price": price,
                    "currency": settings.SHOP_CURRENCY,
                    "stock": stock,
                    "image": DEMO_PICTURES / picture,
                }
                for sku, name, price, stock, picture in DEMO_CATALOG
            ]
        )
        self.stdout.write(self.style.SUCCESS(f"Catalog seeded: {created} created, {updated} updated."))
