from django.core.management.base import BaseCommand

from core.cli import SINCE_HELP, parse_since, run_for_each_with_progress
from orders import selectors, services


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
        run_for_each_with_progress(
            self,
            orders,
            lambda order: services.retry_order(order_id=order[0]),
            verb="retried",
            noun="order(s)",
            label=lambda order: order[0],
        )
