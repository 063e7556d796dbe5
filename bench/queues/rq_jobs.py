"""The trivial task as an RQ job on the default queue, with RQ's defaults (pickle, results kept 500 s)."""

from functools import cache

from redis import Redis
from rq import Queue

from bench.queues import broker_url
from bench.recorder import record_completion


def noop(index: int, enqueued_at: float) -> None:
    record_completion(index, enqueued_at)


@cache
def _queue() -> Queue:
    return Queue(connection=Redis.from_url(broker_url()))


def enqueue(index: int, enqueued_at: float) -> None:
    _queue().enqueue(noop, index, enqueued_at)
