from django.core.management.base import BaseCommand

from orders import selectors, services
from orders.exceptions import OrderNotFound, OrderNotRetryable
from proj.cli import SINCE_HELP, parse_since


class Command(BaseCommand):
    help = (
        "Retry failed orders through the outbox, oldest failure first: each is reopened and scheduled again (a "
        "charge that went through is not repeated: its idempotency key stays the same)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", help=f"Only orders that failed since {SINCE_HELP}.")
        parser.add_argument("--dry-run", action="store_true", help="List the orders that would be retried.")

    def handle(self, *args, since: str | None, dry_run: bool, **options) -> None:
        since_moment = parse_since(since) if since else None
        orders = list(selectors.list_failed_orders(since=since_moment).values_list("pk", "failure_reason"))
        if not orders:
            self.stdout.write("No failed orders to retry.")
            return
        if dry_run:
            for order_id, reason in orders:
                self.stdout.write(f"would retry {order_id}: {reason}")
            self.stdout.write(self.style.SUCCESS(f"Dry run: {len(orders)} order(s) would be retried."))
            return

        retried = skipped = 0
        total = len(orders)
        for index, (order_id, _reason) in enumerate(orders, start=1):
            try:
                services.retry_order(order_id=order_id)
            except (OrderNotRetryable, OrderNotFound) as error:
                # Retried or otherwise moved on by someone else meanwhile.
                skipped += 1
                self.stderr.write(f"skipped {order_id}: {error.message}")
            else:
                retried += 1
            self.stdout.write(f"retried {retried}/{total}", ending="\r" if index < total else "\n")
        self.stdout.write(self.style.SUCCESS(f"Retried {retried} order(s); skipped {skipped}."))
