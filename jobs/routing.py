"""Where every task goes: the queues and the router, in one place, beside the outbox that publishes.

Tasks are named `<app>.<verb>`; the app decides the queue, and a few tasks have a queue of their own (housekeeping on
`maintenance`, CPU-heavy work on `heavy`).
No task passes `queue=` by hand: Celery asks `route_task` for every message it publishes (CELERY_TASK_ROUTES).
"""

from kombu import Queue

QUEUE_BY_APP = {
    "orders": "orders",
    "notifications": "notifications",
    "analytics": "analytics",
    # The outbox's other consumer of events: batches handed to a function over the network, on the same I/O-bound
    # pool as analytics' batches (deploy/k8s/base/worker-io.yaml), which every worker command already consumes.
    "exports": "analytics",
    # The outbox relay and housekeeping: kept apart so a backlog of orders never delays the relay.
    "jobs": "maintenance",
}
# Exceptions to the rule above: housekeeping that must not wait behind its app's backlog.
QUEUE_BY_TASK = {
    "orders.reconcile_stuck_orders": "maintenance",
    "orders.reconcile_notifications": "maintenance",
    "orders.prune_idempotency_keys": "maintenance",
    # CPU-heavy work on a pool of its own (one process per core, nodes of its own in Kubernetes): a product image
    # being thumbnailed in the WebAssembly sandbox never delays an order.
    "orders.make_thumbnail": "heavy",
}
QUEUES = tuple(
    Queue(name, routing_key=name) for name in dict.fromkeys([*QUEUE_BY_APP.values(), *QUEUE_BY_TASK.values()])
)
QUEUE_NAMES = tuple(queue.name for queue in QUEUES)


def route_task(name, args, kwargs, options, task=None, **extra):
    """Return the queue of task `name` (None sends it to CELERY_TASK_DEFAULT_QUEUE)."""
    queue = QUEUE_BY_TASK.get(name) or QUEUE_BY_APP.get(name.partition(".")[0])
    return {"queue": queue, "routing_key": queue} if queue else None
