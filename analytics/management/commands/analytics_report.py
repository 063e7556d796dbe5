import csv
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from analytics import selectors


class Command(BaseCommand):
    help = (
        "Orders and revenue per day (UTC) and status, from the events analytics recorded: placed, completed, "
        "failed and cancelled, per currency."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--days", type=int, default=7, help="How many days back, today included (default 7).")
        parser.add_argument(
            "--format",
            dest="output_format",
            choices=["table", "csv"],
            default="table",
            help="A table to read (default), or CSV to process.",
        )

    def handle(self, *args, days: int, output_format: str, **options) -> None:
        if days < 1:
            raise CommandError("--days must be at least 1.")
        today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
        since = today - timedelta(days=days - 1)
        rows = selectors.summarize_orders_per_day(since=since)
        if output_format == "csv":
            writer = csv.writer(self.stdout, lineterminator="\n")
            writer.writerow(["day", "status", "currency", "orders", "revenue"])
            for row in rows:
                writer.writerow([row.day.isoformat(), row.status, row.currency, row.orders, f"{row.revenue:.2f}"])
            return
        if not rows:
            self.stdout.write(f"No orders since {since:%Y-%m-%d}.")
            return
        self.stdout.write(f"{'day':<10}  {'status':<9}  {'currency':<8}  {'orders':>7}  {'revenue':>12}")
        for row in rows:
            self.stdout.write(
                f"{row.day:%Y-%m-%d}  {row.status:<9}  {row.currency:<8}  {row.orders:>7}  {row.revenue:>12.2f}"
            )
