from django.core.management.base import BaseCommand

from jobs import selectors, services
from jobs.exceptions import DeadLetterAlreadyReplayed, DeadLetterNotFound
from proj.cli import SINCE_HELP, parse_since


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
        dead_letters = list(selectors.list_pending_dead_letters(task_name=task, since=since_moment))
        if not dead_letters:
            self.stdout.write("No dead letters to replay.")
            return
        if dry_run:
            for dead_letter in dead_letters:
                summary = f"{dead_letter.task_name} {dead_letter.kwargs} ({dead_letter.reason})"
                self.stdout.write(f"would replay {dead_letter.pk}: {summary}")
            self.stdout.write(self.style.SUCCESS(f"Dry run: {len(dead_letters)} dead letter(s) would be replayed."))
            return

        replayed = skipped = 0
        total = len(dead_letters)
        for index, dead_letter in enumerate(dead_letters, start=1):
            try:
                services.replay_dead_letter(dead_letter_id=dead_letter.pk)
            except (DeadLetterAlreadyReplayed, DeadLetterNotFound) as error:
                # Replayed or discarded by someone else meanwhile.
                skipped += 1
                self.stderr.write(f"skipped {dead_letter.pk}: {error.message}")
            else:
                replayed += 1
            self.stdout.write(f"replayed {replayed}/{total}", ending="\r" if index < total else "\n")
        self.stdout.write(self.style.SUCCESS(f"Replayed {replayed} dead letter(s); skipped {skipped}."))
