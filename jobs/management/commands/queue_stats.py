import json

from django.core.management.base import BaseCommand, CommandError

from jobs import selectors


class Command(BaseCommand):
    help = (
        "Show how much work waits: messages per queue (priority sub-queues included), the outbox backlog, "
        "dead letters, and which workers answer a ping."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--timeout",
            type=float,
            default=1.0,
            help="Seconds to wait for workers to answer the ping (default 1.0).",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")

    def handle(self, *args, timeout: float, json: bool, **options) -> None:
        if timeout <= 0:
            raise CommandError("--timeout must be a positive number of seconds.")
        try:
            queues = selectors.get_queue_lengths()
            workers = selectors.list_online_workers(timeout=timeout)
        except Exception as error:  # whatever the broker error, say which service and why
            raise CommandError(f"The broker (REDIS_URL / CELERY_BROKER_URL) is not reachable: {error}") from error
        outbox = selectors.get_outbox_backlog()
        dead_letters = selectors.count_dead_letters()

        if json:
            self.stdout.write(
                _json_dumps(
                    {
                        "queues": queues,
                        "outbox": {
                            kind: {"unsent": backlog.unsent, "oldest_age_seconds": round(backlog.oldest_age_seconds, 1)}
                            for kind, backlog in outbox.items()
                        },
                        "dead_letters": dead_letters,
                        "workers": workers,
                    }
                )
            )
            return
        width = max(len(name) for name in queues)
        self.stdout.write(self.style.MIGRATE_HEADING("Queues (messages waiting)"))
        for name, length in queues.items():
            self.stdout.write(f"  {name:<{width}}  {length:>8}")
        self.stdout.write(self.style.MIGRATE_HEADING("Outbox (committed, not yet published)"))
        for kind, backlog in outbox.items():
            self.stdout.write(f"  {kind:<{width}}  {backlog.unsent:>8}  oldest {backlog.oldest_age_seconds:.1f} s")
        self.stdout.write(self.style.MIGRATE_HEADING("Dead letters"))
        self.stdout.write(f"  {'pending':<{width}}  {dead_letters['pending']:>8}")
        self.stdout.write(f"  {'replayed':<{width}}  {dead_letters['replayed']:>8}")
        self.stdout.write(self.style.MIGRATE_HEADING(f"Workers online: {len(workers)}"))
        for worker in workers:
            self.stdout.write(f"  {worker}")
        if not workers:
            self.stdout.write(self.style.WARNING("  none answered: queued work is not being processed"))


def _json_dumps(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
