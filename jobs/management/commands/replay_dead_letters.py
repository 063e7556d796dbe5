from django.core.management.base import BaseCommand

from core.cli import SINCE_HELP, parse_since, run_for_each_with_progress
from jobs import dead_letters, selectors


class Command(BaseCommand):
    help = (
        "Replay dead-lettered tasks not replayed yet, oldest first: each task schedules itself again through the "
        "outbox (a failed order is reopened first). Use --dry-run to see what would be replayed."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--task", help="Only dead letters of this task, e.g. orders.process_order.")
        parser.add_argument("--since", help=f"Only dead letters recorded since {SINCE_HELP}.")
        parser.add_argument("--dry-run", action="store_true", help="List what would be replayed; change nothing.")

    def handle(self, *args, task: str | None, since: str | None, dry_run: bool, **options) -> None:
        since_moment = parse_since(since) if since else None
        pending = list(selectors.list_pending_dead_letters(task_name=task, since=since_moment))
        if not pending:
            self.stdout.write("No dead letters to replay.")
            return
        if dry_run:
            for dead_letter in pending:
                summary = f"{dead_letter.task_name} {dead_letter.kwargs} ({dead_letter.reason})"
                self.stdout.write(f"would replay {dead_letter.pk}: {summary}")
            self.stdout.write(self.style.SUCCESS(f"Dry run: {len(pending)} dead letter(s) would be replayed."))
            return
        run_for_each_with_progress(
            self,
            pending,
            lambda dead_letter: dead_letters.replay_dead_letter(dead_letter_id=dead_letter.pk),
            verb="replayed",
            noun="dead letter(s)",
            label=lambda dead_letter: dead_letter.pk,
        )
