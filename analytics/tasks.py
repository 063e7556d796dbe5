from celery import shared_task

from analytics import services
from jobs.base import ReliableTask


# Batches come from the outbox relay. Like every task here, its result is not stored (CELERY_TASK_IGNORE_RESULT).
@shared_task(name="analytics.track_events", base=ReliableTask)
def track_events_task(events: list[dict]) -> int:
    return services.record_events(events=events)
