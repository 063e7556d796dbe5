from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from jobs import pruning


class Command(BaseCommand):
    help = (
        "Delete history older than the retention: stored task results (django-celery-results), sent outbox "
        "messages and redelivery counts, and whatever else PRUNE_TARGETS names. Beat runs this daily."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=settings.PRUNE_RETENTION_DAYS,
            help=f"Keep this many days of history (default PRUNE_RETENTION_DAYS = {settings.PRUNE_RETENTION_DAYS}).",
        )

    def handle(self, *args, days: int, **options) -> None:
        if days < 1:
            raise CommandError("--days must be at least 1: pruning today's history would delete work in progress.")
        older_than = timedelta(days=days)
        cutoff = timezone.now() - older_than
        self.stdout.write(f"Pruning history older than {days} days (before {cutoff:%Y-%m-%d %H:%M} UTC)...")

        def report(result: pruning.PruneResult) -> None:
            self.stdout.write(f"  {result.target}: {result.deleted} deleted in {result.seconds:.1f} s")

        results = pruning.prune_history(older_than=older_than, on_progress=report)
        self.stdout.write(self.style.SUCCESS(f"Pruned {sum(result.deleted for result in results)} rows."))
