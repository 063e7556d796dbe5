from celery import shared_task

from jobs.base import ReliableTask
from orders import services
from orders.exceptions import OrderNotFound

# An order committed a moment ago can be invisible to a worker for a moment (a lagging replica, a message published
# by hand): look again shortly, a few times, before giving up.
ORDER_NOT_VISIBLE_RETRY_SECONDS = 2
ORDER_NOT_VISIBLE_MAX_RETRIES = 5


class ProcessOrderTask(ReliableTask):
    def give_up(self, reason: str, /, *, order_id: str) -> None:
        services.fail_order(order_id=order_id, reason=f"Processing gave up: {reason}")

    def replay(self, *, order_id: str) -> None:
        services.retry_order(order_id=order_id)


@shared_task(name="orders.process_order", base=ProcessOrderTask, bind=True)
def process_order_task(self, order_id: str) -> str | None:
    try:
        order = services.process_order(order_id=order_id)
    except OrderNotFound as error:
        raise self.retry(
            exc=error, countdown=ORDER_NOT_VISIBLE_RETRY_SECONDS, max_retries=ORDER_NOT_VISIBLE_MAX_RETRIES
        ) from error
    return order.status if order else None


# Runs on the maintenance queue (proj/routing.py), so a backlog of orders cannot delay it.
@shared_task(name="orders.reconcile_stuck_orders")
def reconcile_stuck_orders_task() -> int:
    return services.reconcile_stuck_orders()


# Every five minutes on the maintenance queue: sends again what lost its message; the next tick is the retry.
@shared_task(name="orders.reconcile_notifications")
def reconcile_notifications_task() -> int:
    return services.reconcile_notifications()


# A housekeeping tick on the maintenance queue: the next one is the retry, so no retries or dead letters.
@shared_task(name="orders.prune_idempotency_keys")
def prune_idempotency_keys_task() -> int:
    return services.prune_idempotency_keys()
