from celery import shared_task

from jobs import services


# Not a ReliableTask: no retries and no dead letters, because the next beat tick is the retry.
# The returned counts appear in the worker log.
@shared_task(name="jobs.relay_outbox")
def relay_outbox_task() -> dict:
    report = services.relay_outbox()
    return {"tasks_sent": report.tasks_sent, "events_sent": report.events_sent, "failed": report.failed}
