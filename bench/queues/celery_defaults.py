"""The trivial task on a Celery app with nothing but a broker URL: every other setting is Celery's default."""

from celery import Celery

from bench.queues import broker_url
from bench.recorder import record_completion

app = Celery("bench_defaults", broker=broker_url())


@app.task(name="bench.noop")
def noop_task(index: int, enqueued_at: float) -> None:
    record_completion(index, enqueued_at)


def enqueue(index: int, enqueued_at: float) -> None:
    noop_task.delay(index, enqueued_at)
