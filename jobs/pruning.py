"""Pruning history: every app's old rows, deleted in short batches by one daily job (PRUNE_TARGETS)."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Model, QuerySet
from django.utils import timezone
from django.utils.module_loading import import_string
from django_celery_results.models import TaskResult

from jobs.models import OutboxMessage, TaskDelivery

logger = logging.getLogger(__name__)


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
    return delete_in_batches(TaskResult.objects.filter(date_done__lt=timezone.now() - older_than))


def prune_sent_outbox_messages(*, older_than: timedelta) -> int:
    """Outbox rows published longer ago than `older_than`. Unsent rows are never pruned: they are work to do."""
    return delete_in_batches(OutboxMessage.objects.filter(sent_at__lt=timezone.now() - older_than))


def prune_task_deliveries(*, older_than: timedelta) -> int:
    """Redelivery counts untouched for `older_than`: their messages are long acknowledged or dead-lettered."""
    return delete_in_batches(TaskDelivery.objects.filter(last_delivered_at__lt=timezone.now() - older_than))


def delete_in_batches(rows: QuerySet[Model]) -> int:
    """Delete `rows` PRUNE_BATCH_SIZE at a time; return how many were deleted.

    One short transaction per batch: a large backlog never holds locks (or a long transaction) that orders wait for.
    """
    deleted = 0
    while True:
        batch = list(rows.values_list("pk", flat=True)[: settings.PRUNE_BATCH_SIZE])
        if not batch:
            return deleted
        count, _ = rows.model._default_manager.filter(pk__in=batch).delete()
        deleted += count
