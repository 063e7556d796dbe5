import random

from django.core.management.base import BaseCommand, CommandError

from orders.selectors import list_products
from orders.services import RequestedItem, place_order


class Command(BaseCommand):
    help = "Place demo orders for random products of the catalog (run seed_catalog first)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--count", type=int, default=10, help="How many orders to place (default 10).")
        parser.add_argument("--token", default="tok_visa", help="Payment token (default tok_visa).")
        parser.add_argument("--region", default="eu", help="Region of the orders (default eu).")
        parser.add_argument("--seed", type=int, default=None, help="Random seed, for repeatable orders.")

    def handle(self, *args, count: int, token: str, region: str, seed: int | None, **options) -> None:
        if count < 1:
            raise CommandError("--count must be at least 1.")
        skus = list(list_products().values_list("sku", flat=True))
        if not skus:
            raise CommandError("The catalog is empty: run `manage.py seed_catalog` first.")
        chooser = random.Random(seed)  # noqa: S311 - demo data, not security
        for index in range(1, count + 1):
            items = [RequestedItem(sku, chooser.randint(1, 3)) for sku in chooser.sample(skus, k=min(2, len(skus)))]
            place_order(email=f"customer{index}@example.com", region=region, items=items, payment_token=token)
            if index % 100 == 0 or index == count:
                self.stdout.write(f"placed {index}/{count}", ending="\r" if index < count else "\n")
        self.stdout.write(self.style.SUCCESS(f"Placed {count} orders."))
