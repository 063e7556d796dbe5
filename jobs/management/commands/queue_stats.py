import json

from django.core.management.base import BaseCommand, CommandError

from jobs import selectors


class Command(BaseCommand):
    help = (
        "Show how much work waits: messages per queue (priority sub-queues included) and in flight on workers, "
        "the outbox backlog, dead letters, and the live workers of the registry with what they consume."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")

    def handle(self, *args, json: bool, **options) -> None:
        try:
            queues = selectors.get_queue_lengths()
            overview = selectors.get_worker_overview()
        except Exception as error:  # whatever the broker error, say which service and why
            raise CommandError(f"The broker (REDIS_URL / CELERY_BROKER_URL) is not reachable: {error}") from error
        outbox = selectors.get_outbox_backlog()
        dead_letters = selectors.count_dead_letters()
        workers = overview.live_worker_names

        if json:
            self.stdout.write(
                _json_dumps(
                    {
                        "queues": queues,
                        "in_flight": overview.in_flight,
                        "consumers": overview.consumers,
                        "outbox": {
                            kind: {"unsent": backlog.unsent, "oldest_age_seconds": round(backlog.oldest_age_seconds, 1)}
                            for kind, backlog in outbox.items()
                        },
                        "dead_letters": dead_letters,
                        "workers": workers,
                        "dead_workers": [status.hostname for status in overview.workers if not status.is_alive],
                    }
                )
            )
            return
        width = max(len(name) for name in queues)
        self.stdout.write(self.style.MIGRATE_HEADING("Queues (messages waiting, in flight, live consumers)"))
        for name, length in queues.items():
            line = f"  {name:<{width}}  {length:>8}  {overview.in_flight[name]:>8}  {overview.consumers[name]:>3}"
            self.stdout.write(line if overview.consumers[name] else self.style.WARNING(f"{line}  no consumer"))
        self.stdout.write(self.style.MIGRATE_HEADING("Outbox (committed, not yet published)"))
        for kind, backlog in outbox.items():
            self.stdout.write(f"  {kind:<{width}}  {backlog.unsent:>8}  oldest {backlog.oldest_age_seconds:.1f} s")
        self.stdout.write(self.style.MIGRATE_HEADING("Dead letters"))
        self.stdout.write(f"  {'pending':<{width}}  {dead_letters['pending']:>8}")
        self.stdout.write(f"  {'replayed':<{width}}  {dead_letters['replayed']:>8}")
        self.stdout.write(self.style.MIGRATE_HEADING(f"Workers alive: {len(workers)}"))
        for status in overview.workers:
            if status.info is not None:
                queues_consumed = ",".join(status.info.queues)
                self.stdout.write(f"  {status.hostname}  ({queues_consumed}; {status.info.active} running)")
            else:
                self.stdout.write(self.style.WARNING(f"  {status.hostname}  stopped heartbeating"))
        if not workers:
            self.stdout.write(self.style.WARNING("  none alive: queued work is not being processed"))


def _json_dumps(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
