"""The worker registry in Redis: which workers are alive, what each consumes, and which messages each holds.

Every worker's main process heartbeats (ops/worker.py, from the event loop's timer): a key per worker that expires
after WORKER_REGISTRY_TTL_SECONDS, with what it consumes, and its name in a sorted set by last heartbeat. The
broker transport (jobs/broker.py) records each message the worker reserves as held by it, in the pipeline kombu
sends anyway, and forgets it when the message is acknowledged. Every live worker reaps: the messages held by a
worker whose key expired go back to their queues, through kombu's own restore. Readers: the router (does this
queue have a live consumer?), `/metrics` and `queue_stats` (workers per queue, messages in flight per queue).

The visibility timeout stays as the last backstop, for a message whose holder was not recorded.
"""

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass

from django.conf import settings

logger = logging.getLogger(__name__)

KEY_PREFIX = "shop:registry:"
# Every worker ever heard of, scored by its last heartbeat (Unix time): dead ones are listed until forgotten.
WORKERS_KEY = f"{KEY_PREFIX}workers"
# Each queue -> the last time (Unix time) a live worker consuming it heartbeated: how long a queue has had no one.
QUEUES_CONSUMED_KEY = f"{KEY_PREFIX}queues-consumed"

# The worker of this process, when it is one (set by the worker's registry step): the holder its transport records.
_holder: str | None = None


def alive_key(hostname: str) -> str:
    return f"{KEY_PREFIX}alive:{hostname}"


def held_key(hostname: str) -> str:
    """A hash of the delivery tags the worker holds (reserved, not acknowledged) -> the queue each came from."""
    return f"{KEY_PREFIX}held:{hostname}"


def set_holder(hostname: str | None) -> None:
    global _holder
    _holder = hostname


def holder() -> str | None:
    return _holder


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says of itself in each heartbeat."""

    hostname: str
    queues: tuple[str, ...]
    pid: int = 0
    host: str = ""
    started_at: float = 0.0
    # Tasks it is running now (celery-exporter's celery_worker_tasks_active).
    active: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> "WorkerInfo":
        data = json.loads(raw)
        return cls(**(data | {"queues": tuple(data["queues"])}))


@dataclass(frozen=True)
class WorkerStatus:
    hostname: str
    last_seen: float
    # None once its heartbeat key expired: the worker is dead (or cut off from Redis, which is the same to us).
    info: WorkerInfo | None

    @property
    def is_alive(self) -> bool:
        return self.info is not None


def heartbeat(client, info: WorkerInfo, *, ttl: float) -> None:
    """Say that the worker is alive for `ttl` seconds more, and what it consumes: one round trip."""
    now = time.time()
    pipeline = client.pipeline(transaction=False)
    pipeline.set(alive_key(info.hostname), info.to_json(), px=int(ttl * 1000))
    pipeline.zadd(WORKERS_KEY, {info.hostname: now})
    if info.queues:
        pipeline.hset(QUEUES_CONSUMED_KEY, mapping=dict.fromkeys(info.queues, now))
    pipeline.execute()


def leave(client, hostname: str) -> None:
    """A worker leaving cleanly: no longer alive; forgotten at once unless it still holds messages, which the other
    workers then reap (kombu puts back what a stopping worker holds, but maybe after this runs)."""
    client.delete(alive_key(hostname))
    if not client.hlen(held_key(hostname)):
        client.zrem(WORKERS_KEY, hostname)


def read_workers(client) -> list[WorkerStatus]:
    """Every worker heard of and not forgotten, alive or dead, by host name."""
    seen = client.zrange(WORKERS_KEY, 0, -1, withscores=True)
    if not seen:
        return []
    hostnames = [_text(name) for name, _ in seen]
    infos = client.mget([alive_key(hostname) for hostname in hostnames])
    return sorted(
        (
            WorkerStatus(hostname=hostname, last_seen=score, info=WorkerInfo.from_json(raw) if raw else None)
            for hostname, (_, score), raw in zip(hostnames, seen, infos, strict=True)
        ),
        key=lambda status: status.hostname,
    )


def queues_last_consumed(client) -> dict[str, float]:
    """Each queue ever consumed -> the last time a live worker consuming it heartbeated."""
    return {_text(queue): float(seen) for queue, seen in client.hgetall(QUEUES_CONSUMED_KEY).items()}


def live_workers(client) -> list[WorkerInfo]:
    return [status.info for status in read_workers(client) if status.info is not None]


def is_alive(client, hostname: str) -> bool:
    return bool(client.exists(alive_key(hostname)))


def consumers_by_queue(workers: list[WorkerInfo], queue_names: tuple[str, ...]) -> dict[str, int]:
    """How many live workers consume each queue (every queue named, 0 when none)."""
    counts = Counter(queue for worker in workers for queue in worker.queues)
    return {queue: counts.get(queue, 0) for queue in queue_names}


def held_by_queue(client, hostnames: list[str], queue_names: tuple[str, ...]) -> dict[str, int]:
    """Messages held by these workers (reserved, not acknowledged), per queue (every queue named)."""
    pipeline = client.pipeline(transaction=False)
    for hostname in hostnames:
        pipeline.hvals(held_key(hostname))
    counts = Counter(_text(queue) for values in pipeline.execute() for queue in values)
    return {queue: counts.get(queue, 0) for queue in queue_names}


def reap_dead_workers(channel, *, forget_after: float | None = None) -> dict[str, int]:
    """Put back on their queues the messages held by workers whose heartbeat expired; return how many, per worker.

    `channel` is a kombu Redis channel of ours (jobs/broker.py): each message goes back through kombu's own
    restore (`restore_by_tag`: one transaction that moves it from the unacked hash to its queue only if it is still
    there), so two workers reaping at once restore it once, and one acknowledged meanwhile is not restored.
    """
    client = channel.client
    forget_after = settings.WORKER_REGISTRY_FORGET_AFTER_SECONDS if forget_after is None else forget_after
    restored: dict[str, int] = {}
    for status in read_workers(client):
        if status.is_alive:
            continue
        tags = [_text(tag) for tag in client.hkeys(held_key(status.hostname))]
        if tags and not is_alive(client, status.hostname):  # not back from a pause since read_workers
            for tag in tags:
                channel.qos.restore_by_tag(tag, client=client)
            client.hdel(held_key(status.hostname), *tags)
            restored[status.hostname] = len(tags)
            logger.warning(
                "Worker %s stopped heartbeating %.0f s ago: %d message(s) it held are back in their queues",
                status.hostname,
                time.time() - status.last_seen,
                len(tags),
            )
        if status.last_seen < time.time() - forget_after:
            # Listed a while after death (celery_worker_up 0, for alerts), then forgotten with what is left of it.
            forget = client.pipeline(transaction=False)
            forget.delete(held_key(status.hostname))
            forget.zrem(WORKERS_KEY, status.hostname)
            forget.execute()
    return restored


def reclaim_orphans(channel, *, hostname: str, keep: set[str]) -> int:
    """Put back the messages recorded as held by `hostname` except those in `keep` (delivered on its current
    connection); return how many. For a worker that lost its broker connection: kombu cannot restore what it held
    on the lost channel, and the worker no longer runs it (Celery cancels such tasks), so nobody else would."""
    client = channel.client
    orphans = [tag for tag in (_text(tag) for tag in client.hkeys(held_key(hostname))) if tag not in keep]
    for tag in orphans:
        channel.qos.restore_by_tag(tag, client=client)
    if orphans:
        client.hdel(held_key(hostname), *orphans)
        logger.warning("%d message(s) held on a lost broker connection are back in their queues", len(orphans))
    return len(orphans)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
