"""The reconcilers: what brings back an order, or a notification it owes, whose message was lost.

A message can vanish after it was published: Redis restarted without its append-only file, or a worker was killed
between taking the message and recording it unacknowledged (kombu's Redis transport pops first). Beat runs each
reconciler on the maintenance queue; scheduling something again is harmless, because every task is idempotent.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Exists, OuterRef, Prefetch, Q, Value, When
from django.db.models.functions import Now
from django.utils import timezone

from jobs.outbox import publish_on_commit
from notifications.selectors import settled_notifications
from notifications.tasks import NotificationChannel
from orders import services  # modules, not their names: tasks.py imports this module too
from orders.models import Order, OrderItem

logger = logging.getLogger(__name__)

Status = Order.Status


@transaction.atomic
def reconcile_stuck_orders(*, stuck_after: timedelta | None = None, limit: int = 500) -> int:
    """Schedule again orders left pending or processing for too long (their message was lost); return how many.

    Each order found is touched, so it is scheduled again at most once per `stuck_after`.
    """
    if stuck_after is None:  # not `or`: timedelta(0), "every unfinished order", is falsy
        stuck_after = timedelta(seconds=settings.ORDER_STUCK_AFTER_SECONDS)
    orders = list(
        Order.objects.select_for_update(skip_locked=True)
        .filter(status__in=(Status.PENDING, Status.PROCESSING), updated_at__lt=timezone.now() - stuck_after)
        .order_by("updated_at")
        .only("pk", "region")[:limit]
    )
    if orders:
        logger.warning("Scheduling again %d orders unfinished for more than %s", len(orders), stuck_after)
        Order.objects.filter(pk__in=[order.pk for order in orders]).update(updated_at=Now())
        publish_on_commit(*(services.process_order_message(order) for order in orders))
    return len(orders)


@transaction.atomic
def reconcile_notifications(*, missing_after: timedelta | None = None, limit: int = 500) -> int:
    """Schedule again the notifications of final orders that have not been sent; return for how many orders.

    The order's final status says what it owes: a completed order its confirmation, a failed one the email saying
    why, and a push each when the customer gave a topic. A notification already sent (or being sent by a live
    worker) is not sent twice. Orders that became final within NOTIFICATION_RECONCILE_WINDOW_SECONDS are looked at,
    oldest first; each tick, at most `limit`.
    """
    if missing_after is None:  # not `or`: timedelta(0), "every final order", is falsy
        missing_after = timedelta(seconds=settings.NOTIFICATION_MISSING_AFTER_SECONDS)
    now = timezone.now()

    def settled(channel: str) -> Exists:
        return Exists(settled_notifications(order_id=OuterRef("pk"), kind=OuterRef("owed"), channel=channel))

    orders = list(
        Order.objects.filter(
            status__in=list(services.NOTIFICATION_OWED),
            updated_at__lt=now - missing_after,
            updated_at__gte=now - timedelta(seconds=settings.NOTIFICATION_RECONCILE_WINDOW_SECONDS),
        )
        .annotate(
            owed=Case(*(When(status=status, then=Value(kind)) for status, kind in services.NOTIFICATION_OWED.items()))
        )
        .filter(~settled(NotificationChannel.EMAIL) | (~Q(push_topic="") & ~settled(NotificationChannel.PUSH)))
        .prefetch_related(Prefetch("items", queryset=OrderItem.objects.select_related("product").order_by("product")))
        .order_by("updated_at")[:limit]
    )
    messages = []
    for order in orders:
        items = [services.ReservedItem(sku=item.product.sku, name=item.product.name, quantity=item.quantity)
                 for item in order.items.all()]  # fmt: skip
        messages += services.notifications_owed(order, items=items)
    if messages:
        logger.warning("Scheduling again the notifications of %d final orders that have none sent", len(orders))
        publish_on_commit(*messages)
    return len(orders)
