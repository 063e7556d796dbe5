from typing import Any

from celery import shared_task

from jobs import routing
from jobs.base import ReliableTask
from orders import catalog, idempotency, reconciliation, services
from orders.exceptions import OrderNotFound

# An order committed a moment ago can be invisible to a worker for a moment (a lagging replica, a message published
# by hand): look again shortly, a few times, before giving up.
ORDER_NOT_VISIBLE_RETRY_SECONDS = 2
ORDER_NOT_VISIBLE_MAX_RETRIES = 5


class ProcessOrderTask(ReliableTask):
    def give_up(self, reason: str, /, **kwargs: Any) -> None:
        services.fail_order(order_id=kwargs["order_id"], reason=f"Processing gave up: {reason}")

    def replay(self, **kwargs: Any) -> None:
        services.retry_order(order_id=kwargs["order_id"])


# `region` is the order's: the router sends the message by it (jobs/routing.py); a message of an earlier release has
# none, and was routed then. `processed_in` records the queue's region the worker took it from.
@shared_task(name="orders.process_order", base=ProcessOrderTask, bind=True)
def process_order_task(self, order_id: str, region: str = "") -> str | None:
    processor = services.Processor(
        worker=self.request.hostname or "",
        region=routing.processed_in((self.request.delivery_info or {}).get("routing_key")),
    )
    try:
        order = services.process_order(order_id=order_id, processor=processor)
    except OrderNotFound as error:
        raise self.retry(
            exc=error, countdown=ORDER_NOT_VISIBLE_RETRY_SECONDS, max_retries=ORDER_NOT_VISIBLE_MAX_RETRIES
        ) from error
    return order.status if order else None


class MakeThumbnailTask(ReliableTask):
    def give_up(self, reason: str, /, **kwargs: Any) -> None:
        catalog.record_thumbnail_failure(
            product_id=kwargs["product_id"],
            image_version=kwargs["image_version"],
            code=catalog.THUMBNAIL_GAVE_UP,
            reason=reason,
        )


# On the heavy queue (jobs/routing.py): CPU-bound work in the WebAssembly sandbox, on a pool of its own. What the
# sandbox refuses or stops is recorded on the product, never retried; transient errors (the database) retry.
@shared_task(name="orders.make_thumbnail", base=MakeThumbnailTask)
def make_thumbnail_task(product_id: int, image_version: int) -> str | None:
    return catalog.make_product_thumbnail(product_id=product_id, image_version=image_version)


# Runs on the maintenance queue (jobs/routing.py), so a backlog of orders cannot delay it. Like every housekeeping
# tick: no retries or dead letters, the next tick is the retry.
@shared_task(name="orders.reconcile_stuck_orders")
def reconcile_stuck_orders_task() -> int:
    return reconciliation.reconcile_stuck_orders()


# Every five minutes on the maintenance queue: sends again what lost its message.
@shared_task(name="orders.reconcile_notifications")
def reconcile_notifications_task() -> int:
    return reconciliation.reconcile_notifications()


# Hourly on the maintenance queue: the one place idempotency keys are deleted, at their time to live.
@shared_task(name="orders.prune_idempotency_keys")
def prune_idempotency_keys_task() -> int:
    return idempotency.prune_idempotency_keys()
