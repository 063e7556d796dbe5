"""The trivial task on a RedisHuey with its defaults (blocking dequeue; a None result is not stored)."""

from huey import RedisHuey

from bench.queues import broker_url
from bench.recorder import record_completion

huey = RedisHuey("bench", url=broker_url())


@huey.task()
def noop_task(index: int, enqueued_at: float) -> None:
    record_completion(index, enqueued_at)


def enqueue(index: int, enqueued_at: float) -> None:
    noop_task(index, enqueued_at)
