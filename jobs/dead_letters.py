"""Dead letters: tasks that gave up, kept for ops to replay or discard; and the redelivery count behind them."""

import logging

from celery import current_app
from django.db import connection, transaction
from django.utils import timezone

from jobs.exceptions import DeadLetterAlreadyReplayed, DeadLetterNotFound
from jobs.models import DeadLetter, TaskDelivery

logger = logging.getLogger(__name__)


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


@transaction.atomic
def discard_dead_letter(*, dead_letter_id: int) -> None:
    """Delete a dead letter ops decided not to replay (the task's failure stays recorded in its domain)."""
    dead_letter = DeadLetter.objects.select_for_update().filter(pk=dead_letter_id).first()
    if dead_letter is None:
        raise DeadLetterNotFound(f"Dead letter {dead_letter_id} does not exist.")
    logger.info("Discarding dead letter %s %s: %s", dead_letter.task_name, dead_letter.task_id, dead_letter.reason)
    dead_letter.delete()


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
