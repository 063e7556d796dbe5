"""The trivial task as a Dramatiq actor on a RedisBroker with its default middleware."""

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.queues import broker_url
from bench.recorder import record_completion

broker = RedisBroker(url=broker_url())
dramatiq.set_broker(broker)


@dramatiq.actor
def noop_task(index: int, enqueued_at: float) -> None:
    record_completion(index, enqueued_at)


def enqueue(index: int, enqueued_at: float) -> None:
    noop_task.send(index, enqueued_at)
