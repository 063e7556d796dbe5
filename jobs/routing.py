"""Where every task goes: the queues and the router, in one place, beside the outbox that publishes.

No task passes `queue=` by hand: Celery asks `route_task` for every message it publishes (CELERY_TASK_ROUTES), the
outbox's fast path, its relay, retries and replays alike; a redelivered message goes back to the queue it came from.

Tasks that carry an order's personal data (RESIDENT_TASKS) go to the queue of the order's region, `cloud.<region>`,
consumed only by that region's workers. A region whose data must stay in it (STRICT_RESIDENCY_REGIONS) is always
sent there, whether or not it has a live worker: its messages wait. Any other region is sent there while it has a
live consumer and a backlog under PUBLIC_FALLBACK_BACKLOG; else to `public_fallback`, the public pool's queue; and
what waits in such a region's queue when it has had no consumer for PUBLIC_FALLBACK_AFTER_SECONDS is moved there
(`move_stranded_messages`). The rest - analytics events, exports, housekeeping, images - carries no personal data
and runs on central queues. README "Regions and data residency" has the table.
"""

import logging
import time
from dataclasses import dataclass

from celery import current_app
from django.conf import settings
from kombu import Queue

from jobs import registry

logger = logging.getLogger(__name__)

REGION_QUEUE_PREFIX = "cloud."
PUBLIC_FALLBACK = "public_fallback"
# What `WORKER_REGION=public` and `processed_in` call the public pool.
PUBLIC = "public"

# Each task that carries an order's personal data, and what it carries: its message names the order's `region`.
RESIDENT_TASKS = {
    "orders.process_order": "the order: the customer's email and payment token; it charges the card",
    "notifications.send_notification": "the customer's email address or push topic, the order's items",
}
# Everything else carries no personal data and runs centrally, wherever that is.
CENTRAL_QUEUE_BY_APP = {
    "analytics": "analytics",
    # The outbox's other consumer of events: batches handed to a function over the network, on the same I/O-bound
    # pool as analytics' batches (deploy/k8s/base/worker-io.yaml).
    "exports": "analytics",
    # The outbox relay and housekeeping: kept apart so a backlog of orders never delays the relay.
    "jobs": "maintenance",
}
CENTRAL_QUEUE_BY_TASK = {
    "orders.reconcile_stuck_orders": "maintenance",
    "orders.reconcile_notifications": "maintenance",
    "orders.prune_idempotency_keys": "maintenance",
    # CPU-heavy work on a pool of its own (one process per core, nodes of its own in Kubernetes): a product image
    # being thumbnailed in the WebAssembly sandbox never delays an order. Product images are no personal data.
    "orders.make_thumbnail": "heavy",
}
CENTRAL_QUEUES = tuple(dict.fromkeys([*CENTRAL_QUEUE_BY_APP.values(), *CENTRAL_QUEUE_BY_TASK.values()]))
# How long the router trusts what it read of a region (live consumers, backlog): one read per process and region
# every few seconds, not one per message.
REGION_STATE_CACHE_SECONDS = 2.0


class UnroutableTask(Exception):
    """A message the router cannot place: a resident task without a known region. Raised, never sent to nowhere
    (a routing key that matches no queue would be dropped silently)."""


def region_queue(region: str) -> str:
    return f"{REGION_QUEUE_PREFIX}{region}"


def declared_queues(regions: list[str]) -> tuple[Queue, ...]:
    """Every queue of the service, for CELERY_TASK_QUEUES: the regions', the public pool's, the central ones."""
    names = [*(region_queue(region) for region in regions), PUBLIC_FALLBACK, *CENTRAL_QUEUES]
    return tuple(Queue(name, routing_key=name) for name in names)


def queue_names() -> tuple[str, ...]:
    return tuple(queue.name for queue in settings.CELERY_TASK_QUEUES)


def is_strict(region: str) -> bool:
    return region in settings.STRICT_RESIDENCY_REGIONS


def queues_of_worker_region(worker_region: str) -> list[str]:
    """What a worker started with WORKER_REGION consumes: its region's queue, or the public pool's."""
    if worker_region == PUBLIC:
        return [PUBLIC_FALLBACK]
    if worker_region not in settings.ORDER_REGIONS:
        choices = ", ".join([*settings.ORDER_REGIONS, PUBLIC])
        raise UnroutableTask(f"WORKER_REGION={worker_region!r} is no region of ORDER_REGIONS; choose one of {choices}.")
    return [region_queue(worker_region)]


def processed_in(routing_key: str | None) -> str:
    """Where this worker process is processing a message sent with `routing_key`: the worker's own WORKER_REGION
    (`public` for the public pool) when it has one - it consumes nothing else; for a worker of every region (one
    site), the region of the queue the message was sent to, `public`, or '' (a central queue).

    Not from the routing key alone: a message moved to the public pool keeps the routing key it was sent with."""
    if settings.WORKER_REGION:
        return settings.WORKER_REGION
    if routing_key == PUBLIC_FALLBACK:
        return PUBLIC
    if routing_key and routing_key.startswith(REGION_QUEUE_PREFIX):
        return routing_key.removeprefix(REGION_QUEUE_PREFIX)
    return ""


def route_task(name, args, kwargs, options, task=None, **extra):
    """The queue of a message (Celery's router interface): a function of the task and its arguments."""
    queue: str | None
    if name in RESIDENT_TASKS:
        queue = queue_for_region((kwargs or {}).get("region"), task_name=name)
    else:
        queue = CENTRAL_QUEUE_BY_TASK.get(name) or CENTRAL_QUEUE_BY_APP.get(name.partition(".")[0])
    return {"queue": queue, "routing_key": queue} if queue else None


def queue_for_region(region: str | None, *, task_name: str) -> str:
    if region not in settings.ORDER_REGIONS:
        raise UnroutableTask(f"{task_name} names no region of ORDER_REGIONS ({region!r}): it cannot be routed.")
    if is_strict(region):
        return region_queue(region)
    return region_queue(region) if _region_state(region).has_room else PUBLIC_FALLBACK


@dataclass(frozen=True)
class RegionState:
    consumers: int
    waiting: int
    read_at: float

    @property
    def has_room(self) -> bool:
        return self.consumers > 0 and self.waiting < settings.PUBLIC_FALLBACK_BACKLOG


_region_states: dict[str, RegionState] = {}


def _region_state(region: str) -> RegionState:
    """Live consumers and messages waiting of a region's queue, read at most every REGION_STATE_CACHE_SECONDS.

    When the broker cannot be read the region counts as having room (and is not read again for a while): the
    publish that follows fails too, and the outbox relay sends the message later, deciding again then. The read
    waits as a publish does (BROKER_PUBLISH_TIMEOUT_SECONDS), never as long as a consumer.
    """
    cached = _region_states.get(region)
    if cached is not None and time.monotonic() - cached.read_at < REGION_STATE_CACHE_SECONDS:
        return cached
    queue = region_queue(region)
    try:
        with current_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0)
            channel = connection.default_channel
            workers = registry.live_workers(channel.client)
            waiting = _length(channel, queue)
        state = RegionState(consumers=sum(queue in worker.queues for worker in workers), waiting=waiting,
                            read_at=time.monotonic())  # fmt: skip
    except Exception:
        logger.warning("Could not read region %s's state; sending to its own queue", region, exc_info=True)
        state = RegionState(consumers=1, waiting=0, read_at=time.monotonic())
    _region_states[region] = state
    return state


def _length(channel, queue: str) -> int:
    """Messages waiting in `queue`, its priority sub-queues included."""
    pipeline = channel.client.pipeline(transaction=False)
    for priority in channel.priority_steps:
        pipeline.llen(channel._q_for_pri(queue, priority))
    return sum(pipeline.execute())


def move_stranded_messages(channel) -> dict[str, int]:
    """Move to `public_fallback` what waits in the queue of a region that may use public capacity and has had no
    live consumer for PUBLIC_FALLBACK_AFTER_SECONDS; return how many, per region. A strict region's messages wait.

    One LMOVE per message, from each priority sub-queue to the same one of `public_fallback`: atomic, so workers
    moving at the same moment move each message once. A moved message keeps the routing key it was sent with: if a
    public worker holding it dies, it is put back in its region's queue, and moved again.
    """
    client = channel.client
    last_consumed = registry.queues_last_consumed(client)
    moved: dict[str, int] = {}
    for region in settings.ORDER_REGIONS:
        queue = region_queue(region)
        if is_strict(region) or time.time() - last_consumed.get(queue, 0.0) < settings.PUBLIC_FALLBACK_AFTER_SECONDS:
            continue
        count = 0
        for priority in channel.priority_steps:
            source, target = channel._q_for_pri(queue, priority), channel._q_for_pri(PUBLIC_FALLBACK, priority)
            while client.lmove(source, target, "RIGHT", "LEFT") is not None:
                count += 1
        if count:
            moved[region] = count
            logger.warning("Region %s has had no consumer: moved %d message(s) to %s", region, count, PUBLIC_FALLBACK)
    return moved
