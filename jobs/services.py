"""The transactional outbox and dead letters.

Business code never calls `.delay()`: it calls `enqueue_on_commit(task, **kwargs)` or `emit_event(...)` inside its
transaction. The row commits with the business change; right after the commit the message is published (the fast
path). If the process dies or Redis is unreachable in between, `relay_outbox` publishes the row later. A message can
therefore be published twice, which is harmless because every task is idempotent.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from celery import Task, current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Model, QuerySet
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.module_loading import import_string
from django_celery_results.models import TaskResult

from jobs.exceptions import DeadLetterAlreadyReplayed, DeadLetterNotFound
from jobs.models import DeadLetter, OutboxMessage, TaskDelivery

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
    _require_transaction()
    OutboxMessage.objects.bulk_create(messages)
    tasks = [message for message in messages if message.kind == OutboxMessage.Kind.TASK]
    if tasks:
        transaction.on_commit(partial(_publish_after_commit, tasks))
    return list(messages)


def enqueue_on_commit(task: Task, /, **kwargs) -> OutboxMessage:
    """Record `task(**kwargs)` in the current transaction; publish it as soon as the transaction commits."""
    [message] = publish_on_commit(task_message(task, **kwargs))
    return message


def emit_event(event_type: str, /, **data) -> OutboxMessage:
    """Record a domain event in the current transaction; the relay delivers it, batched, to the event consumers."""
    [message] = publish_on_commit(event_message(event_type, **data))
    return message


def _require_transaction() -> None:
    # Outside a transaction the row would commit on its own, and the business change it belongs to might not.
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("The outbox must be written inside transaction.atomic, with the change it belongs to.")


def _publish_after_commit(messages: list[OutboxMessage]) -> None:
    sent = []
    for message in messages:
        try:
            _publish_task(message)
        except Exception as error:  # noqa: BLE001 - whatever failed, the relay retries; the commit already succeeded
            # The broker is unreachable: the rest would wait for the same timeout. The relay sends them all later.
            logger.warning("Publishing %s %s failed; the outbox relay will retry: %r", message.name, message.id, error)
            unsent = [message.pk for message in messages if message.pk not in sent]
            OutboxMessage.objects.filter(pk__in=unsent).update(
                publish_attempts=F("publish_attempts") + 1, last_error=repr(error)[:1000]
            )
            break
        sent.append(message.pk)
    if sent:
        OutboxMessage.objects.filter(pk__in=sent).update(sent_at=Now(), publish_attempts=F("publish_attempts") + 1)


def _publish_task(message: OutboxMessage) -> None:
    # The outbox id is the task id: a message published twice is one task to Flower, results and delivery counts.
    current_app.send_task(message.name, kwargs=message.payload, task_id=str(message.id))


@dataclass(frozen=True)
class RelayReport:
    tasks_sent: int
    events_sent: int
    failed: int


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
    sent = []
    for message in messages:
        try:
            _publish_task(message)
        except Exception as error:  # noqa: BLE001 - the broker is down: stop here, the next run goes on
            logger.warning("Relay could not publish %s %s: %r", message.name, message.id, error)
            OutboxMessage.objects.filter(pk=message.pk).update(
                publish_attempts=F("publish_attempts") + 1, last_error=repr(error)[:1000]
            )
            break
        sent.append(message.pk)
    OutboxMessage.objects.filter(pk__in=sent).update(sent_at=Now(), publish_attempts=F("publish_attempts") + 1)
    return len(sent), len(messages) - len(sent)


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


def record_dead_letter(
    *, task_id: str, task_name: str, args: list, kwargs: dict, reason: str, attempts: int
) -> DeadLetter:
    """Keep a task that gave up, with what ops need to replay it."""
    dead_letter, _ = DeadLetter.objects.update_or_create(
        task_id=task_id,
        defaults={
            "task_name": task_name,
            "args": list(args),
            "kwargs": dict(kwargs),
            "reason": reason,
            "attempts": attempts,
            "replayed_at": None,
        },
    )
    return dead_letter


@transaction.atomic
def replay_dead_letter(*, dead_letter_id: int) -> DeadLetter:
    """Run a dead-lettered task again, through the task's own `replay` (which may first reopen domain state)."""
    dead_letter = DeadLetter.objects.select_for_update().filter(pk=dead_letter_id).first()
    if dead_letter is None:
        raise DeadLetterNotFound(f"Dead letter {dead_letter_id} does not exist.")
    if dead_letter.replayed_at is not None:
        raise DeadLetterAlreadyReplayed(f"Dead letter {dead_letter_id} was replayed at {dead_letter.replayed_at}.")
    task = current_app.tasks[dead_letter.task_name]
    task.replay(**dead_letter.kwargs)
    dead_letter.replayed_at = timezone.now()
    dead_letter.save(update_fields=["replayed_at"])
    return dead_letter


def count_redelivery(*, task_id: str, task_name: str) -> int:
    """Count one more delivery of a redelivered message and return its deliveries so far, the first included."""
    table = TaskDelivery._meta.db_table
    # One statement, so concurrent deliveries of one message cannot both read the old count.
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (task_id, task_name, deliveries, last_delivered_at) VALUES (%s, %s, 2, now())
            ON CONFLICT (task_id) DO UPDATE
            SET deliveries = {table}.deliveries + 1, last_delivered_at = now()
            RETURNING deliveries
            """,  # noqa: S608 - the table name is ours, the values are parameters
            [task_id, task_name],
        )
        return cursor.fetchone()[0]


@transaction.atomic
def discard_dead_letter(*, dead_letter_id: int) -> None:
    """Delete a dead letter ops decided not to replay (the task's failure stays recorded in its domain)."""
    dead_letter = DeadLetter.objects.select_for_update().filter(pk=dead_letter_id).first()
    if dead_letter is None:
        raise DeadLetterNotFound(f"Dead letter {dead_letter_id} does not exist.")
    logger.info("Discarding dead letter %s %s: %s", dead_letter.task_name, dead_letter.task_id, dead_letter.reason)
    dead_letter.delete()


# --- Pruning history ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneResult:
    target: str
    deleted: int
    seconds: float


def prune_history(
    *, older_than: timedelta, on_progress: Callable[[PruneResult], None] | None = None
) -> list[PruneResult]:
    """Delete what every target of PRUNE_TARGETS keeps that is older than `older_than`; report each as it is done."""
    results = []
    for target, path in settings.PRUNE_TARGETS.items():
        started = time.monotonic()
        deleted = import_string(path)(older_than=older_than)
        result = PruneResult(target=target, deleted=deleted, seconds=time.monotonic() - started)
        logger.info("Pruned %d %s older than %s", deleted, target, older_than)
        if on_progress is not None:
            on_progress(result)
        results.append(result)
    return results


def prune_task_results(*, older_than: timedelta) -> int:
    """Results stored by django-celery-results for tasks finished longer ago than `older_than`."""
    return _delete_in_batches(TaskResult.objects.filter(date_done__lt=timezone.now() - older_than))


def prune_sent_outbox_messages(*, older_than: timedelta) -> int:
    """Outbox rows published longer ago than `older_than`. Unsent rows are never pruned: they are work to do."""
    return _delete_in_batches(OutboxMessage.objects.filter(sent_at__lt=timezone.now() - older_than))


def prune_task_deliveries(*, older_than: timedelta) -> int:
    """Redelivery counts untouched for `older_than`: their messages are long acknowledged or dead-lettered."""
    return _delete_in_batches(TaskDelivery.objects.filter(last_delivered_at__lt=timezone.now() - older_than))


def _delete_in_batches(rows: QuerySet[Model]) -> int:
    # One short transaction per batch: a large backlog never holds locks (or a long transaction) that orders wait for.
    deleted = 0
    while True:
        batch = list(rows.values_list("pk", flat=True)[: settings.PRUNE_BATCH_SIZE])
        if not batch:
            return deleted
        count, _ = rows.model.objects.filter(pk__in=batch).delete()
        deleted += count
