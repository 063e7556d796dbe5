"""The transactional outbox: messages written with the change that causes them, published once it commits.

Business code never calls `.delay()`. It builds its messages (`task_message(task, **kwargs)` for a task,
`event_message(type, **data)` for a domain event) and writes them with `publish_on_commit(...)`, the one way to
write to the outbox, inside its transaction. The rows commit with the business change; right after the commit the
tasks among them are published (the fast path). If the process dies or Redis is unreachable in between,
`relay_outbox` publishes the rows later, and it delivers events to their consumers in batches. A message can
therefore be published twice, which is harmless because every task is idempotent.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from celery import Task, current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from jobs.models import OutboxMessage

logger = logging.getLogger(__name__)


def task_message(task: Task, /, **kwargs) -> OutboxMessage:
    """The outbox row for `task(**kwargs)`, for `publish_on_commit`."""
    return OutboxMessage(kind=OutboxMessage.Kind.TASK, name=task.name, payload=kwargs)


def event_message(event_type: str, /, **data) -> OutboxMessage:
    """The outbox row for a domain event, for `publish_on_commit`; the relay delivers events in batches."""
    return OutboxMessage(kind=OutboxMessage.Kind.EVENT, name=event_type, payload=data)


def publish_on_commit(*messages: OutboxMessage) -> list[OutboxMessage]:
    """Write `messages` in the current transaction; publish the tasks among them as soon as it commits.

    Everything one transaction sends goes in one INSERT and is marked sent by one UPDATE: on the hot path an
    order's confirmation and its event cost one round trip, not two (see docs/benchmarks.md).
    """
    # Outside a transaction the rows would commit on their own, and the business change they belong to might not.
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("The outbox must be written inside transaction.atomic, with the change it belongs to.")
    OutboxMessage.objects.bulk_create(messages)
    tasks = [message for message in messages if message.kind == OutboxMessage.Kind.TASK]
    if tasks:
        transaction.on_commit(partial(_publish_tasks, tasks))
    return list(messages)


def _publish_tasks(messages: list[OutboxMessage]) -> int:
    """Publish task rows in order and mark them sent; stop at the first failure (the rest would wait for the same
    unreachable broker) and record it on the unsent rows, which the relay sends later. Returns how many were sent.
    """
    sent: list = []
    for message in messages:
        try:
            _publish_task(message)
        except Exception as error:  # noqa: BLE001 - whatever failed, the relay retries; the commit already succeeded
            logger.warning("Publishing %s %s failed; the outbox relay will retry: %r", message.name, message.id, error)
            unsent = [message.pk for message in messages[len(sent) :]]
            OutboxMessage.objects.filter(pk__in=unsent).update(
                publish_attempts=F("publish_attempts") + 1, last_error=repr(error)[:1000]
            )
            break
        sent.append(message.pk)
    if sent:
        OutboxMessage.objects.filter(pk__in=sent).update(sent_at=Now(), publish_attempts=F("publish_attempts") + 1)
    return len(sent)


def _publish_task(message: OutboxMessage) -> None:
    # The outbox id is the task id: a message published twice is one task to Flower, results and delivery counts.
    current_app.send_task(message.name, kwargs=message.payload, task_id=str(message.id))


@dataclass(frozen=True)
class RelayReport:
    tasks_sent: int
    events_sent: int
    failed: int

    @property
    def did_something(self) -> bool:
        return bool(self.tasks_sent or self.events_sent or self.failed)


def relay_outbox(*, batch_size: int | None = None) -> RelayReport:
    """Publish task rows that missed their fast path, and pending events in batches. Safe to run concurrently."""
    batch_size = batch_size or settings.OUTBOX_RELAY_BATCH_SIZE
    tasks_sent, failed = _relay_tasks(batch_size)
    events_sent = _relay_events(batch_size)
    return RelayReport(tasks_sent=tasks_sent, events_sent=events_sent, failed=failed)


@transaction.atomic
def _relay_tasks(batch_size: int) -> tuple[int, int]:
    # Publishing while the rows are locked is deliberate: SKIP LOCKED keeps concurrent relays off the same rows.
    # Should the commit fail after a publish, the row is published again later, which idempotent tasks absorb.
    cutoff = timezone.now() - timedelta(seconds=settings.OUTBOX_RELAY_AFTER_SECONDS)
    messages = list(
        OutboxMessage.objects.select_for_update(skip_locked=True)
        .filter(kind=OutboxMessage.Kind.TASK, sent_at__isnull=True, created_at__lte=cutoff)
        .order_by("created_at")[:batch_size]
    )
    sent = _publish_tasks(messages) if messages else 0
    return sent, len(messages) - sent


@transaction.atomic
def _relay_events(batch_size: int) -> int:
    # Events never sent first; then events sent long ago that no consumer confirmed: their batch was lost in Redis.
    candidates = OutboxMessage.objects.select_for_update(skip_locked=True).filter(kind=OutboxMessage.Kind.EVENT)
    messages = list(candidates.filter(sent_at__isnull=True).order_by("created_at")[:batch_size])
    if len(messages) < batch_size:
        unconfirmed_before = timezone.now() - timedelta(seconds=settings.OUTBOX_EVENT_REDELIVER_AFTER_SECONDS)
        lost = candidates.filter(delivered_at__isnull=True, sent_at__lt=unconfirmed_before).order_by("sent_at")
        messages += lost[: batch_size - len(messages)]
    if not messages:
        return 0
    resent = sum(message.sent_at is not None for message in messages)
    if resent:
        logger.warning("Relay sends %d events again: no consumer confirmed them", resent)
    events = [
        {
            "event_id": str(message.id),
            "type": message.name,
            "occurred_at": message.created_at.isoformat(),
            "data": message.payload,
        }
        for message in messages
    ]
    try:
        for consumer in settings.OUTBOX_EVENT_CONSUMERS:
            current_app.send_task(consumer, kwargs={"events": events})
    except Exception as error:  # noqa: BLE001 - the broker is down: the events stay unsent for the next run
        logger.warning("Relay could not publish %d events: %r", len(events), error)
        return 0
    OutboxMessage.objects.filter(pk__in=[message.pk for message in messages]).update(
        sent_at=Now(), publish_attempts=F("publish_attempts") + 1
    )
    return len(messages)


def confirm_events(*, event_ids: list[str]) -> int:
    """Record that a consumer stored these events, so the relay never sends them again; return how many."""
    return OutboxMessage.objects.filter(pk__in=event_ids, delivered_at__isnull=True).update(delivered_at=Now())
