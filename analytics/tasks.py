from celery import shared_task

from analytics import services
from jobs.base import EventConsumerTask


# Batches come from the outbox relay, and are confirmed once stored (EventConsumerTask); storing one twice stores
# each event once. Like every task here, its result is not stored (CELERY_TASK_IGNORE_RESULT).
@shared_task(name="analytics.track_events", base=EventConsumerTask)
def track_events_task(events: list[dict]) -> int:
    return services.record_events(events=events)
