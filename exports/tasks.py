from celery import shared_task

from exports import services
from jobs.base import EventConsumerTask


# Batches come from the outbox relay and are confirmed once handed over (EventConsumerTask). A throttled or failing
# function retries with backoff (FunctionUnavailable is a TransientError); a refusal is dead-lettered at once.
@shared_task(name="exports.export_events", base=EventConsumerTask)
def export_events_task(events: list[dict]) -> int:
    return services.export_events(events=events).events_sent
