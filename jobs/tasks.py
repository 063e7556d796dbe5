from datetime import timedelta

from celery import shared_task
from django.conf import settings

from jobs import services


# Not a ReliableTask: no retries and no dead letters, because the next beat tick is the retry.
# The returned counts appear in the worker log.
@shared_task(name="jobs.relay_outbox")
def relay_outbox_task() -> dict:
    report = services.relay_outbox()
    return {"tasks_sent": report.tasks_sent, "events_sent": report.events_sent, "failed": report.failed}


# Beat runs it daily. Not a ReliableTask: a failed run is simply done again by the next one.
@shared_task(name="jobs.prune_history")
def prune_history_task() -> dict:
    older_than = timedelta(days=settings.PRUNE_RETENTION_DAYS)
    return {result.target: result.deleted for result in services.prune_history(older_than=older_than)}
