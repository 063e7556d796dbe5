"""Every write to orders: place, process, cancel, fail, retry and reconcile.

The status machine is `pending -> processing -> completed`, or `failed` / `cancelled`. Every transition is a
guarded update (it happens only from the expected status), so a service that runs twice has the effect of running
once. An order in `processing` always has its stock reserved.
"""

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.db.models import Case, Exists, F, OuterRef, Prefetch, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Now
from django.utils import timezone

from jobs.models import OutboxMessage
from jobs.services import enqueue_on_commit, event_message, publish_on_commit, task_message
from notifications.models import Notification
from notifications.services import CLAIM_STALE_AFTER_SECONDS
from notifications.tasks import send_notification_task
from orders import tasks  # a module, not its names: tasks.py imports this module too
from orders.exceptions import OrderNotCancellable, OrderNotFound, OrderNotRetryable, UnknownProduct
from orders.models import IdempotencyKey, Order, OrderEvent, OrderItem, Product
from orders.payments import Charge, PaymentDeclined, get_gateway
from proj.errors import InvalidInput

logger = logging.getLogger(__name__)

Status = Order.Status
NotificationStatus = Notification.Status

# The notification kinds an order owes its customer: on completion, and on failure.
CONFIRMATION = "order_confirmation"
FAILURE_NOTICE = "order_failed"

# ntfy's topic rule: letters, digits, `-` and `_`, at most 64 characters.
PUSH_TOPIC_PATTERN = re.compile(r"^[-_A-Za-z0-9]{1,64}$")


@dataclass(frozen=True)
class OrderLine:
    sku: str
    quantity: int


@dataclass(frozen=True)
class ReservedLine:
    sku: str
    name: str
    quantity: int


@transaction.atomic
def place_order(
    *, email: str, region: str, items: Sequence[OrderLine], payment_token: str, push_topic: str = ""
) -> Order:
    """Create the order from database prices and schedule its processing once this transaction commits."""
    quantities = _validate_order_input(
        email=email, region=region, items=items, payment_token=payment_token, push_topic=push_topic
    )
    products = Product.objects.in_bulk(list(quantities), field_name="sku")
    unknown = {
        f"items[{index}].sku": f"Unknown product {item.sku!r}."
        for index, item in enumerate(items)
        if item.sku not in products
    }
    if unknown:
        raise UnknownProduct("The order names products that do not exist.", fields=unknown)
    currencies = {product.currency for product in products.values()}
    if len(currencies) > 1:
        raise InvalidInput("All products of one order must be priced in one currency.", fields={"items": "mixed"})

    total = sum((products[sku].price * quantity for sku, quantity in quantities.items()), Decimal("0.00"))
    order = Order.objects.create(
        email=email.strip(),
        region=region,
        total=total,
        currency=currencies.pop(),
        payment_token=payment_token,
        push_topic=push_topic,
    )
    items = OrderItem.objects.bulk_create(
        OrderItem(order=order, product=products[sku], quantity=quantity, unit_price=products[sku].price)
        for sku, quantity in sorted(quantities.items())
    )
    placed = OrderEvent.objects.create(order=order, status=Status.PENDING)
    # Hand the rows just written to the caller as if prefetched (as selectors.get_order reads them: items by SKU,
    # then the timeline), so that answering with the order does not read back what this function wrote.
    order._prefetched_objects_cache = {
        "items": _as_prefetched(order.items.all(), items),
        "events": _as_prefetched(order.events.all(), [placed]),
    }
    publish_on_commit(
        task_message(tasks.process_order_task, order_id=str(order.id)),
        event_message("order_placed", **_event_data(order)),
    )
    return order


def _as_prefetched(queryset: QuerySet, rows: list) -> QuerySet:
    """`queryset` holding `rows` as its results, the way prefetch_related leaves it: iterating it reads nothing."""
    queryset._result_cache = rows
    queryset._prefetch_done = True
    return queryset


def _validate_order_input(
    *, email: str, region: str, items: Sequence[OrderLine], payment_token: str, push_topic: str
) -> dict[str, int]:
    """Check the order's shape; return the quantity per SKU (a SKU listed twice is one line)."""
    errors = {}
    try:
        validate_email(email.strip())
    except ValidationError:
        errors["email"] = "Enter a valid email address."
    if region not in settings.ORDER_REGIONS:
        errors["region"] = f"Unknown region; choose one of {', '.join(settings.ORDER_REGIONS)}."
    if not payment_token or len(payment_token) > Order._meta.get_field("payment_token").max_length:
        errors["payment_token"] = "Give a payment token of at most 64 characters."  # noqa: S105 - a message
    if push_topic and not PUSH_TOPIC_PATTERN.match(push_topic):
        errors["push_topic"] = "A push topic has 1 to 64 letters, digits, '-' or '_'."
    if not items:
        errors["items"] = "An order needs at least one item."
    elif len(items) > settings.ORDER_MAX_LINES:
        errors["items"] = f"An order has at most {settings.ORDER_MAX_LINES} lines."

    quantities: dict[str, int] = {}
    maximum = settings.ORDER_MAX_QUANTITY_PER_LINE
    for index, item in enumerate(items):
        if not item.sku:
            errors[f"items[{index}].sku"] = "Give the product's SKU."
        if isinstance(item.quantity, bool) or not isinstance(item.quantity, int) or item.quantity < 1:
            errors[f"items[{index}].quantity"] = "The quantity must be a whole number of at least 1."
            continue
        quantities[item.sku] = quantities.get(item.sku, 0) + item.quantity
        if quantities[item.sku] > maximum:
            errors[f"items[{index}].quantity"] = f"At most {maximum} units of one product per order."
    if errors:
        raise InvalidInput("The order is invalid.", fields=errors)
    return quantities


def process_order(*, order_id: str) -> Order | None:
    """Reserve stock, charge and complete a pending order; return it, or None when there was nothing to do.

    Idempotent: a second delivery finds the order past `pending` and changes nothing, or resumes an order left in
    `processing` by a worker that died. The charge's idempotency key is the order id, so it is charged once.
    The database transaction is never held open across the call to the payment provider.
    """
    started = _start_processing(order_id)
    if started is None:
        return None
    order, lines = started
    try:
        charge = get_gateway().charge(
            amount=order.total,
            currency=order.currency,
            token=order.payment_token,
            idempotency_key=f"order-{order.id}",
            description=f"Order {order.id}",
        )
    except PaymentDeclined as declined:
        return fail_order(order_id=order.id, reason=f"Payment declined: {declined.reason}")
    return _complete(order, charge, lines)


@transaction.atomic
def _start_processing(order_id: str) -> tuple[Order, list[ReservedLine]] | None:
    order = _transition(order_id, source=(Status.PENDING,), target=Status.PROCESSING, count_attempt=True)
    if order is not None:
        lines = _reserve_stock(order)
        return (order, lines) if lines is not None else None

    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        raise OrderNotFound(f"Order {order_id} does not exist (or is not visible yet).")
    if order.status != Status.PROCESSING:
        return None  # completed, failed or cancelled already: a duplicate message
    # Left in `processing` by a worker that died, or a duplicate running alongside: resume. Stock is reserved.
    Order.objects.filter(pk=order.pk).update(attempts=F("attempts") + 1)
    lines = [
        ReservedLine(sku=sku, name=name, quantity=quantity)
        for sku, name, quantity in order.items.order_by("product_id").values_list(
            "product__sku", "product__name", "quantity"
        )
    ]
    return order, lines


def _reserve_stock(order: Order) -> list[ReservedLine] | None:
    """Take the order's units from stock, or fail the order if any product is short. Returns the lines."""
    # One statement: lock the order's products in id order (two orders sharing products cannot deadlock), then
    # take every line's units, or none of them when one product is short. The stock >= 0 constraint backs it up.
    # NO KEY UPDATE, the lock an UPDATE of stock takes anyway: it does not wait for (or block) the KEY SHARE locks
    # that placing an order takes on its products (foreign key checks), which deadlocked with FOR UPDATE.
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH wanted AS (
                SELECT product.id, product.sku, product.name, product.stock, item.quantity
                FROM {Product._meta.db_table} product
                JOIN {OrderItem._meta.db_table} item ON item.product_id = product.id
                WHERE item.order_id = %s
                ORDER BY product.id
                FOR NO KEY UPDATE OF product
            ), taken AS (
                UPDATE {Product._meta.db_table} product SET stock = product.stock - wanted.quantity
                FROM wanted
                WHERE product.id = wanted.id AND NOT EXISTS (SELECT 1 FROM wanted WHERE stock < quantity)
            )
            SELECT sku, name, stock, quantity FROM wanted ORDER BY id
            """,  # noqa: S608 - table names come from our models; the value is a parameter
            [str(order.pk)],
        )
        rows = cursor.fetchall()
    short = [sku for sku, _, stock, quantity in rows if stock < quantity]
    if short:
        _fail(order.pk, source=Status.PROCESSING, reason=f"Out of stock: {', '.join(short)}", release_stock=False)
        return None
    return [ReservedLine(sku=sku, name=name, quantity=quantity) for sku, name, _, quantity in rows]


def _quantity_ordered(order: Order) -> Subquery:
    return Subquery(OrderItem.objects.filter(order=order, product=OuterRef("pk")).values("quantity")[:1])


@transaction.atomic
def _complete(order: Order, charge: Charge, lines: list[ReservedLine]) -> Order | None:
    completed = _transition(order.pk, source=(Status.PROCESSING,), target=Status.COMPLETED, payment_reference=charge.id)
    if completed is None:
        return None  # a duplicate delivery completed (or an operator failed) it first
    publish_on_commit(
        *_notifications(completed, kind=CONFIRMATION, context=_confirmation_context(completed, lines)),
        event_message("order_completed", **_event_data(completed)),
    )
    return completed


def _confirmation_context(order: Order, lines: list[ReservedLine]) -> dict:
    return {
        "order_id": str(order.pk),
        "total": str(order.total),
        "currency": order.currency,
        "items": [{"sku": line.sku, "name": line.name, "quantity": line.quantity} for line in lines],
    }


def fail_order(*, order_id: str, reason: str) -> Order | None:
    """Record the final failure of a pending or processing order, releasing reserved stock. None if already final."""
    return _fail(order_id, source=Status.PROCESSING, reason=reason, release_stock=True) or _fail(
        order_id, source=Status.PENDING, reason=reason, release_stock=False
    )


@transaction.atomic
def _fail(order_id: str, *, source: str, reason: str, release_stock: bool) -> Order | None:
    order = _transition(order_id, source=(source,), target=Status.FAILED, note=reason, failure_reason=reason)
    if order is None:
        return None
    if release_stock:
        Product.objects.filter(order_items__order=order).update(stock=F("stock") + _quantity_ordered(order))
    publish_on_commit(
        *_notifications(order, kind=FAILURE_NOTICE, context=_failure_context(order)),
        event_message("order_failed", **_event_data(order), reason=reason),
    )
    return order


@transaction.atomic
def cancel_order(*, order_id: str) -> Order:
    """Cancel an order that has not started processing; 409 once it has."""
    order = _transition(order_id, source=(Status.PENDING,), target=Status.CANCELLED, note="Cancelled by the customer.")
    if order is None:
        current = Order.objects.filter(pk=order_id).first()
        if current is None:
            raise OrderNotFound(f"Order {order_id} does not exist.")
        raise OrderNotCancellable(
            f"Only a pending order can be cancelled; this one is {current.status}.",
            details={"status": current.status},
        )
    publish_on_commit(event_message("order_cancelled", **_event_data(order)))
    return order


@transaction.atomic
def retry_order(*, order_id: str) -> Order:
    """Reopen a failed order (as ops decide) and schedule its processing again. The charge key stays the same,
    so an order that was charged before it failed is not charged twice."""
    order = _transition(
        order_id, source=(Status.FAILED,), target=Status.PENDING, note="Retried by an operator.", failure_reason=""
    )
    if order is None:
        current = Order.objects.filter(pk=order_id).first()
        if current is None:
            raise OrderNotFound(f"Order {order_id} does not exist.")
        raise OrderNotRetryable(
            f"Only a failed order can be retried; this one is {current.status}.", details={"status": current.status}
        )
    enqueue_on_commit(tasks.process_order_task, order_id=str(order.pk))
    return order


@transaction.atomic
def reconcile_stuck_orders(*, stuck_after: timedelta | None = None, limit: int = 500) -> int:
    """Schedule again orders left pending or processing for too long (their message was lost); return how many.

    Each order found is touched, so it is scheduled again at most once per `stuck_after`.
    """
    if stuck_after is None:  # not `or`: timedelta(0), "every unfinished order", is falsy
        stuck_after = timedelta(seconds=settings.ORDER_STUCK_AFTER_SECONDS)
    order_ids = list(
        Order.objects.select_for_update(skip_locked=True)
        .filter(status__in=(Status.PENDING, Status.PROCESSING), updated_at__lt=timezone.now() - stuck_after)
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    Order.objects.filter(pk__in=order_ids).update(updated_at=Now())
    if order_ids:
        publish_on_commit(*(task_message(tasks.process_order_task, order_id=str(pk)) for pk in order_ids))
    return len(order_ids)


@transaction.atomic
def reconcile_notifications(*, missing_after: timedelta | None = None, limit: int = 500) -> int:
    """Schedule again the notifications of final orders that have not been sent; return for how many orders.

    The message that sends a notification can vanish after it was published: Redis restarted without its
    append-only file, or a worker was killed between taking the message and recording it unacknowledged (kombu's
    Redis transport pops first). The order's final status says what it owes: a completed order its confirmation,
    a failed one the email saying why, and a push each when the customer gave a topic. Scheduling one again is
    harmless: a notification already sent (or being sent by a live worker) is not sent twice. Orders that became
    final within NOTIFICATION_RECONCILE_WINDOW_SECONDS are looked at, oldest first; each tick, at most `limit`.
    """
    if missing_after is None:  # not `or`: timedelta(0), "every final order", is falsy
        missing_after = timedelta(seconds=settings.NOTIFICATION_MISSING_AFTER_SECONDS)
    now = timezone.now()
    settled = Notification.objects.filter(order_id=OuterRef("pk"), kind=OuterRef("owed")).filter(
        Q(status__in=(NotificationStatus.SENT, NotificationStatus.SKIPPED, NotificationStatus.FAILED))
        | Q(claimed_at__gte=now - timedelta(seconds=CLAIM_STALE_AFTER_SECONDS))
    )
    orders = list(
        Order.objects.filter(
            status__in=(Status.COMPLETED, Status.FAILED),
            updated_at__lt=now - missing_after,
            updated_at__gte=now - timedelta(seconds=settings.NOTIFICATION_RECONCILE_WINDOW_SECONDS),
        )
        .annotate(owed=Case(When(status=Status.COMPLETED, then=Value(CONFIRMATION)), default=Value(FAILURE_NOTICE)))
        .filter(
            ~Exists(settled.filter(channel="email")) | (~Q(push_topic="") & ~Exists(settled.filter(channel="push")))
        )
        .prefetch_related(Prefetch("items", queryset=OrderItem.objects.select_related("product").order_by("product")))
        .order_by("updated_at")[:limit]
    )
    messages = []
    for order in orders:
        if order.status == Status.COMPLETED:
            lines = [ReservedLine(sku=item.product.sku, name=item.product.name, quantity=item.quantity)
                     for item in order.items.all()]  # fmt: skip
            messages += _notifications(order, kind=CONFIRMATION, context=_confirmation_context(order, lines))
        else:
            messages += _notifications(order, kind=FAILURE_NOTICE, context=_failure_context(order))
    if messages:
        logger.warning("Scheduling again the notifications of %d final orders that have none sent", len(orders))
        publish_on_commit(*messages)
    return len(orders)


def prune_idempotency_keys(*, older_than: timedelta | None = None) -> int:
    """Delete the API's idempotency keys older than their time to live (24 hours); return how many."""
    older_than = older_than or timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lte=timezone.now() - older_than).delete()
    return deleted


@transaction.atomic
def seed_catalog(*, products: list[dict]) -> tuple[int, int]:
    """Create or update products by SKU; stock is set only for new products. Returns (created, updated)."""
    created = 0
    for product in products:
        _, was_created = Product.objects.update_or_create(
            sku=product["sku"],
            defaults={"name": product["name"], "price": product["price"], "currency": product["currency"]},
            create_defaults={**product},
        )
        created += was_created
    return created, len(products) - created


def _transition(
    order_id, *, source: tuple[str, ...], target: str, note: str = "", count_attempt: bool = False, **changes
) -> Order | None:
    """Move the order from one of `source` to `target` and append the timeline entry; None if not in `source`.

    One statement (a data-modifying CTE): the guard, the change and its timeline entry cannot come apart, and
    they cost one round trip, which matters on the hot path.
    """
    assignments = ["status = %s", "updated_at = statement_timestamp()"]
    params: list = [target]
    for field_name, value in changes.items():
        assignments.append(f"{Order._meta.get_field(field_name).column} = %s")
        params.append(value)
    if count_attempt:
        assignments.append("attempts = attempts + 1")
    sql = f"""
        WITH moved AS (
            UPDATE {Order._meta.db_table} SET {", ".join(assignments)}
            WHERE id = %s AND status = ANY(%s)
            RETURNING *
        ), appended AS (
            INSERT INTO {OrderEvent._meta.db_table} (order_id, status, note, created_at)
            SELECT id, status, %s, statement_timestamp() FROM moved
        )
        SELECT * FROM moved
    """  # noqa: S608 - table and column names come from our models; every value is a parameter
    params += [str(order_id), list(source), note]
    return next(iter(Order.objects.raw(sql, params)), None)


def _notifications(order: Order, *, kind: str, context: dict) -> list[OutboxMessage]:
    """The notification tasks owed to the customer: email always, push when they gave a topic."""
    recipients = {"email": order.email, "push": order.push_topic}
    return [
        task_message(
            send_notification_task,
            order_id=str(order.pk),
            channel=channel,
            kind=kind,
            recipient=recipient,
            context=context,
        )
        for channel, recipient in recipients.items()
        if recipient
    ]


def _failure_context(order: Order) -> dict:
    return {"order_id": str(order.pk), "reason": order.failure_reason}


def _event_data(order: Order) -> dict:
    return {"order_id": str(order.pk), "region": order.region, "total": str(order.total), "currency": order.currency}
