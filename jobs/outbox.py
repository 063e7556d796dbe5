"""The transactional outbox: messages written with the change that causes them, published once it commits.

Business code never calls `.delay()`. It builds its messages (`task_message(task, **kwargs)` for a task,
`event_message(type, **data)` for a domain event) and writes them with `publish_on_commit(...)`, the one way to
write to the outbox, inside its transaction. The rows commit with the business change; right after the commit the
tasks among them are published (the fast path). If the process dies or Redis is unreachable in between,
`relay_outbox` publishes the rows later, and it delivers events to their consumers in batches. A message can
therefore be published twice, which is harmless because every task is idempotent.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from celery import Task, current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Func, Value, When
from django.db.models.functions import Now
from django.utils import timezone

from jobs.models import OutboxMessage
from jobs.routing import UnroutableTask

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
        except UnroutableTask as error:
            # Not the broker: this row names no place to go, and never will. It stays unsent, its error on it (the
            # outbox's oldest unsent age alerts ops); the rows after it go on.
            logger.error("Outbox row %s (%s) cannot be routed: %s", message.id, message.name, error)
            OutboxMessage.objects.filter(pk=message.pk).update(last_error=str(error)[:1000])
            continue
        except Exception as error:  # noqa: BLE001 - whatever failed, the relay retries; the commit already succeeded
            logger.warning("Publishing %s %s failed; the outbox relay will retry: %r", message.name, message.id, error)
            unsent = [row.pk for row in messages[messages.index(message) :]]
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


def relay_outbox(*, batch_size: int | None = None, budget_seconds: float | None = None) -> RelayReport:
    """Publish task rows that missed their fast path, and pending events in batches. Safe to run concurrently.

    Batch after batch, each in a transaction of its own, while a batch comes back full, for at most `budget_seconds`
    (default OUTBOX_RELAY_INTERVAL_SECONDS: about when beat sends the next run). One batch per run would cap the
    relay at OUTBOX_RELAY_BATCH_SIZE per interval, 250 events/s: three events an order, a shop taking more than 83
    orders/s would fall further behind every second. A failed publish ends the run (the broker is down).
    """
    batch_size = batch_size or settings.OUTBOX_RELAY_BATCH_SIZE
    budget = settings.OUTBOX_RELAY_INTERVAL_SECONDS if budget_seconds is None else budget_seconds
    deadline = time.monotonic() + budget
    tasks_sent = events_sent = failed = 0
    while True:
        batch_tasks_sent, batch_failed = _relay_tasks(batch_size)
        batch_events_sent = _relay_events(batch_size)
        tasks_sent, events_sent = tasks_sent + batch_tasks_sent, events_sent + batch_events_sent
        failed += batch_failed
        is_full = batch_tasks_sent == batch_size or batch_events_sent == batch_size
        if not is_full or batch_failed or time.monotonic() >= deadline:
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
    # Events never sent first, to every consumer; then events sent long ago that a consumer never confirmed (their
    # batch was lost in Redis), to the consumers that still owe their receipt only.
    consumers = list(settings.OUTBOX_EVENT_CONSUMERS)
    candidates = OutboxMessage.objects.select_for_update(skip_locked=True).filter(kind=OutboxMessage.Kind.EVENT)
    messages = list(candidates.filter(sent_at__isnull=True).order_by("created_at")[:batch_size])
    if len(messages) < batch_size:
        unconfirmed_before = timezone.now() - timedelta(seconds=settings.OUTBOX_EVENT_REDELIVER_AFTER_SECONDS)
        # The same predicate as outbox_awaited_event_idx, so the scan reads only the rows still awaited.
        lost = candidates.filter(sent_at__lt=unconfirmed_before).exclude(awaiting_consumers=[]).order_by("sent_at")
        messages += lost[: batch_size - len(messages)]
    if not messages:
        return 0
    # A consumer no longer configured (the export turned off) gets nothing, and its missing receipts hold nothing.
    recipients = {
        message.pk: tuple(
            consumer for consumer in consumers if message.sent_at is None or consumer in message.awaiting_consumers
        )
        for message in messages
    }
    events = {message.pk: _event(message) for message in messages}
    batches = {
        consumer: [events[message.pk] for message in messages if consumer in recipients[message.pk]]
        for consumer in consumers
    }
    for consumer in consumers:
        resent = sum(message.sent_at is not None for message in messages if consumer in recipients[message.pk])
        if resent:
            logger.warning("Relay sends %d events again to %s: it did not confirm them", resent, consumer)
    try:
        for consumer, batch in batches.items():
            if batch:
                current_app.send_task(consumer, kwargs={"events": batch})
    except Exception as error:  # noqa: BLE001 - the broker is down: the events stay as they were for the next run
        logger.warning("Relay could not publish %d events: %r", len(messages), error)
        return 0
    # One UPDATE per set of recipients (a few at most): each row now awaits the consumers it was just sent to.
    by_recipients: dict[tuple[str, ...], list] = {}
    for message in messages:
        by_recipients.setdefault(recipients[message.pk], []).append(message.pk)
    sent = 0
    for awaited, pks in by_recipients.items():
        rows = OutboxMessage.objects.filter(pk__in=pks)
        if awaited or not consumers:
            sent += rows.update(
                sent_at=Now(), publish_attempts=F("publish_attempts") + 1, awaiting_consumers=list(awaited)
            )
        else:
            # Awaited only by consumers that are gone: nothing to send, nobody to wait for.
            rows.update(awaiting_consumers=[])
    return sent


def _event(message: OutboxMessage) -> dict:
    """An event as its consumers receive it; `event_id` (the outbox id) lets each drop a duplicate."""
    return {
        "event_id": str(message.id),
        "type": message.name,
        "occurred_at": message.created_at.isoformat(),
        "data": message.payload,
    }


def confirm_events(*, consumer: str, event_ids: list[str]) -> int:
    """Record `consumer`'s receipt for these events: the relay never sends them to it again; return how many."""
    return _release(consumer=consumer, event_ids=event_ids, is_delivered=True)


def abandon_events(*, consumer: str, event_ids: list[str]) -> int:
    """Record that `consumer` gave up on these events (its dead letter keeps them for ops): none is sent to it
    again by the relay, only by a replay. Return how many."""
    return _release(consumer=consumer, event_ids=event_ids, is_delivered=False)


def _release(*, consumer: str, event_ids: list[str], is_delivered: bool) -> int:
    # One UPDATE, as with a single receipt. A row locked by a relay that is sending it is waited for, then updated
    # as the relay left it: the receipt is never lost to a relay that runs at the same moment.
    ids = [event_id for event_id in event_ids if _is_uuid(event_id)]
    remaining = Func(
        F("awaiting_consumers"),
        Value(consumer),
        function="array_remove",
        output_field=OutboxMessage._meta.get_field("awaiting_consumers"),
    )
    changes: dict = {"awaiting_consumers": remaining}
    if is_delivered:
        # Delivered to all once the last consumer awaited confirms it.
        changes["delivered_at"] = Case(When(awaiting_consumers=[consumer], then=Now()), default=F("delivered_at"))
    return OutboxMessage.objects.filter(pk__in=ids, awaiting_consumers__contains=[consumer]).update(**changes)


def _is_uuid(value: object) -> bool:
    # A malformed batch (it fails its task) is dead-lettered: its ids must not fail the recording of that too.
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
