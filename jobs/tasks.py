import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings

from jobs import outbox, pruning

logger = logging.getLogger(__name__)


# Not a ReliableTask: no retries and no dead letters, because the next beat tick is the retry. Every 2 s, so it
# logs a line only when it sent something (core.logging.QuietHousekeepingFilter quiets Celery's own lines).
@shared_task(name="jobs.relay_outbox")
def relay_outbox_task() -> dict:
    report = outbox.relay_outbox()
    if report.did_something:
        logger.info(
            "Relayed %d task(s) and %d event(s); %d failed to publish",
            report.tasks_sent,
            report.events_sent,
            report.failed,
        )
    return {"tasks_sent": report.tasks_sent, "events_sent": report.events_sent, "failed": report.failed}


# Beat runs it daily. Not a ReliableTask: a failed run is simply done again by the next one.
@shared_task(name="jobs.prune_history")
def prune_history_task() -> dict:
    older_than = timedelta(days=settings.PRUNE_RETENTION_DAYS)
    return {result.target: result.deleted for result in pruning.prune_history(older_than=older_than)}
