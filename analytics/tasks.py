from celery import shared_task

from analytics import services
from jobs.base import ReliableTask


# Batches come from the outbox relay. Nobody reads a result of this task, so none is stored.
@shared_task(name="analytics.track_events", base=ReliableTask, ignore_result=True)
def track_events_task(events: list[dict]) -> int:
    return services.record_events(events=events)
