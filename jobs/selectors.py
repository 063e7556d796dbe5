"""Reads about the task pipeline: broker queues, the workers, the outbox and dead letters."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from celery import current_app
from django.conf import settings
from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from jobs import registry, routing
from jobs.models import DeadLetter, OutboxMessage

logger = logging.getLogger(__name__)

# A scrape or an ops page must not hang on a broker that stopped answering; the caller reports the broker down.
BROKER_READ_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class OutboxBacklog:
    unsent: int
    # Seconds since the oldest unsent row was committed; 0 when nothing waits.
    oldest_age_seconds: float


@dataclass(frozen=True)
class ConsumerBacklog:
    # Events the consumer has not confirmed: not sent yet, or sent and awaiting its receipt.
    unconfirmed: int
    # Seconds since the oldest of them was committed; 0 when none waits.
    oldest_age_seconds: float


@dataclass(frozen=True)
class WorkerOverview:
    # Every worker the registry lists: alive, or dead and not forgotten yet.
    workers: list[registry.WorkerStatus]
    # Live workers consuming each queue.
    consumers: dict[str, int]
    # Messages workers hold (reserved, not acknowledged) per queue: taken, not finished; a dead worker's count until
    # they are reaped.
    in_flight: dict[str, int]

    @property
    def live_worker_names(self) -> list[str]:
        return [status.hostname for status in self.workers if status.is_alive]


@contextmanager
def _broker_channel() -> Iterator:
    with current_app.pool.acquire(block=True, timeout=BROKER_READ_TIMEOUT_SECONDS) as connection:
        # No retry: a scrape reports the broker down at once rather than retrying for the connection's timeout.
        connection.ensure_connection(max_retries=0)
        yield connection.default_channel


def get_worker_overview(*, queue_names: tuple[str, ...] | None = None) -> WorkerOverview:
    """The worker registry (jobs/registry.py): who is alive, what each queue has for consumers and in flight."""
    queue_names = queue_names or routing.queue_names()
    with _broker_channel() as channel:
        workers = registry.read_workers(channel.client)
        live = [status.info for status in workers if status.info is not None]
        in_flight = registry.held_by_queue(channel.client, [status.hostname for status in workers], queue_names)
    return WorkerOverview(
        workers=workers, consumers=registry.consumers_by_queue(live, queue_names), in_flight=in_flight
    )


def is_worker_alive(hostname: str) -> bool:
    """Whether the worker heartbeats; True when the broker cannot be read (it cannot be told dead)."""
    try:
        with _broker_channel() as channel:
            return registry.is_alive(channel.client, hostname)
    except Exception:
        logger.warning("Could not read the worker registry; taking %s for alive", hostname, exc_info=True)
        return True


def get_queue_lengths(*, queue_names: tuple[str, ...] | None = None) -> dict[str, int]:
    """Messages waiting in each queue, counting the Redis transport's priority sub-queues (`orders\\x06\\x163`, ...).

    Messages a worker has taken but not acknowledged are not waiting, so they are not counted (they are in flight:
    `get_worker_overview`).
    """
    queue_names = queue_names or routing.queue_names()
    with _broker_channel() as channel:
        keys = {
            queue: [channel._q_for_pri(queue, priority) for priority in channel.priority_steps] for queue in queue_names
        }
        with channel.client.pipeline(transaction=False) as pipeline:
            for queue_keys in keys.values():
                for key in queue_keys:
                    pipeline.llen(key)
            lengths = iter(pipeline.execute())
    return {queue: sum(next(lengths) for _ in queue_keys) for queue, queue_keys in keys.items()}


def get_outbox_backlog() -> dict[str, OutboxBacklog]:
    """Unsent outbox rows and the age of the oldest one, per kind (`task`, `event`); every kind is present."""
    rows = (
        OutboxMessage.objects.filter(sent_at__isnull=True)
        .values_list("kind")
        .annotate(unsent=Count("pk"), oldest=Min("created_at"))
        .order_by()
    )
    now = timezone.now()
    backlog = {kind: OutboxBacklog(unsent=0, oldest_age_seconds=0.0) for kind in OutboxMessage.Kind.values}
    for kind, unsent, oldest in rows:
        backlog[kind] = OutboxBacklog(unsent=unsent, oldest_age_seconds=max((now - oldest).total_seconds(), 0.0))
    return backlog


def get_event_backlog_by_consumer() -> dict[str, ConsumerBacklog]:
    """Events each consumer of OUTBOX_EVENT_CONSUMERS has not confirmed, and the oldest one's age; all present.

    Reads the outbox's two partial indexes (rows not sent, events still awaited), never its sent history.
    """
    events = OutboxMessage.objects.filter(kind=OutboxMessage.Kind.EVENT)
    unsent = events.filter(sent_at__isnull=True).aggregate(count=Count("pk"), oldest=Min("created_at"))
    awaited = events.filter(sent_at__isnull=False).exclude(awaiting_consumers=[])
    now = timezone.now()
    backlog = {}
    for consumer in settings.OUTBOX_EVENT_CONSUMERS:
        mine = awaited.filter(awaiting_consumers__contains=[consumer]).aggregate(
            count=Count("pk"), oldest=Min("created_at")
        )
        oldest = min((moment for moment in (unsent["oldest"], mine["oldest"]) if moment is not None), default=now)
        backlog[consumer] = ConsumerBacklog(
            unconfirmed=unsent["count"] + mine["count"], oldest_age_seconds=max((now - oldest).total_seconds(), 0.0)
        )
    return backlog


def count_dead_letters() -> dict[str, int]:
    """Dead letters waiting for ops (`pending`) and those replayed already (`replayed`)."""
    pending = Q(replayed_at__isnull=True)
    return DeadLetter.objects.aggregate(pending=Count("pk", filter=pending), replayed=Count("pk", filter=~pending))


def list_pending_dead_letters(*, task_name: str | None = None, since: datetime | None = None) -> QuerySet[DeadLetter]:
    """Dead letters not replayed yet, oldest first, optionally of one task or recorded since a moment."""
    dead_letters = DeadLetter.objects.filter(replayed_at__isnull=True).order_by("created_at", "pk")
    if task_name:
        dead_letters = dead_letters.filter(task_name=task_name)
    if since:
        dead_letters = dead_letters.filter(created_at__gte=since)
    return dead_letters
