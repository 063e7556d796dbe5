"""The order workflow: place, process, cancel, fail and retry an order.

The status machine is `pending -> processing -> completed`, or `failed` / `cancelled`. Every transition is a
guarded update (it happens only from the expected status), so a service that runs twice has the effect of running
once. An order in `processing` always has its stock reserved. The reconcilers live in `orders/reconciliation.py`.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F, OuterRef, Subquery
from django.db.models.functions import Now

from core.errors import InvalidInput
from jobs.models import OutboxMessage
from jobs.outbox import event_message, publish_on_commit, task_message
from notifications.tasks import NotificationChannel, NotificationKind, send_notification_task
from orders import (
    statements,
    tasks,  # a module, not its names: tasks.py imports this module too
)
from orders.exceptions import OrderNotCancellable, OrderNotFound, OrderNotRetryable, UnknownProduct
from orders.models import PAYMENT_TOKEN_MAX_LENGTH, Order, OrderEvent, OrderId, OrderItem, Product
from orders.payments import Charge, PaymentDeclined, get_gateway
from orders.selectors import OrderDetails

Status = Order.Status

# What a final order owes its customer: a confirmation once completed, an email saying why once failed.
NOTIFICATION_OWED: dict[str, NotificationKind] = {
    Status.COMPLETED: NotificationKind.ORDER_CONFIRMATION,
    Status.FAILED: NotificationKind.ORDER_FAILED,
}

# ntfy's topic rule: letters, digits, `-` and `_`, at most 64 characters.
PUSH_TOPIC_PATTERN = re.compile(r"^[-_A-Za-z0-9]{1,64}$")


@dataclass(frozen=True)
class Processor:
    """Who processes an order: the worker (its node name, recorded in the timeline) and where it runs (its region,
    `public`, or '' for a worker of no region), recorded on the order as `processed_in`."""

    worker: str = ""
    region: str = ""


NO_PROCESSOR = Processor()


@dataclass(frozen=True)
class RequestedItem:
    """A product and how many of it, as a customer asks for it."""

    sku: str
    quantity: int


@dataclass(frozen=True)
class ReservedItem:
    """An item whose units were taken from stock, as the confirmation names it."""

    sku: str
    name: str
    quantity: int


@transaction.atomic
def place_order(
    *, email: str, region: str, items: Sequence[RequestedItem], payment_token: str, push_topic: str = ""
) -> OrderDetails:
    """Create the order from database prices and schedule its processing once this transaction commits.

    Returns the order with the items and timeline entry just written, so that answering with it reads nothing back.
    """
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
    # By SKU, as selectors.get_order reads them.
    written_items = OrderItem.objects.bulk_create(
        OrderItem(order=order, product=products[sku], quantity=quantity, unit_price=products[sku].price)
        for sku, quantity in sorted(quantities.items())
    )
    placed = OrderEvent.objects.create(order=order, status=Status.PENDING)
    publish_on_commit(
        process_order_message(order),
        event_message("order_placed", **_event_data(order)),
    )
    return OrderDetails(order=order, items=written_items, timeline=[placed])


def process_order_message(order: Order) -> OutboxMessage:
    """The outbox row that processes `order`: it names the order's region, which the router sends it by."""
    return task_message(tasks.process_order_task, order_id=str(order.pk), region=order.region)


def _validate_order_input(
    *, email: str, region: str, items: Sequence[RequestedItem], payment_token: str, push_topic: str
) -> dict[str, int]:
    """Check the order's shape; return the quantity per SKU (a SKU listed twice is one item)."""
    errors = {}
    try:
        validate_email(email.strip())
    except ValidationError:
        errors["email"] = "Enter a valid email address."
    if region not in settings.ORDER_REGIONS:
        errors["region"] = f"Unknown region; choose one of {', '.join(settings.ORDER_REGIONS)}."
    if not payment_token or len(payment_token) > PAYMENT_TOKEN_MAX_LENGTH:
        errors["payment_token"] = f"Give a payment token of at most {PAYMENT_TOKEN_MAX_LENGTH} characters."
    if push_topic and not PUSH_TOPIC_PATTERN.match(push_topic):
        errors["push_topic"] = "A push topic has 1 to 64 letters, digits, '-' or '_'."
    if not items:
        errors["items"] = "An order needs at least one item."
    elif len(items) > settings.ORDER_MAX_ITEMS:
        errors["items"] = f"An order has at most {settings.ORDER_MAX_ITEMS} items."

    quantities: dict[str, int] = {}
    maximum = settings.ORDER_MAX_QUANTITY_PER_ITEM
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


def process_order(*, order_id: OrderId, processor: Processor = NO_PROCESSOR) -> Order | None:
    """Reserve stock, charge and complete a pending order; return it, or None when there was nothing to do.

    Idempotent: a second delivery finds the order past `pending` and changes nothing, or resumes an order left in
    `processing` by a worker that died. The charge's idempotency key is the order id, so it is charged once.
    The database transaction is never held open across the call to the payment provider.
    """
    started = _start_processing(order_id, processor)
    if started is None:
        return None
    order, items = started
    try:
        charge = get_gateway().charge(
            amount=order.total,
            currency=order.currency,
            token=order.payment_token,
            idempotency_key=f"order-{order.id}",
            description=f"Order {order.id}",
        )
    except PaymentDeclined as declined:
        return fail_order(order_id=order.id, reason=f"Payment declined: {declined.reason}", processor=processor)
    return _complete(order, charge, items, processor)


def _processed_by(processor: Processor) -> dict:
    """The transition's record of who processed it: the worker in the timeline, the region on the order."""
    return {"worker": processor.worker, "processed_in": processor.region} if processor.worker else {}


@transaction.atomic
def _start_processing(order_id: OrderId, processor: Processor) -> tuple[Order, list[ReservedItem]] | None:
    order = statements.transition(
        order_id, source=(Status.PENDING,), target=Status.PROCESSING, count_attempt=True, **_processed_by(processor)
    )
    if order is not None:
        items = _reserve_stock(order, processor)
        return (order, items) if items is not None else None

    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        raise OrderNotFound(f"Order {order_id} does not exist (or is not visible yet).")
    if order.status != Status.PROCESSING:
        return None  # completed, failed or cancelled already: a duplicate message
    # Left in `processing` by a worker that died, or a retry after a transient error: resume (stock is reserved), and
    # count it as activity, so the stuck-order reconciler only looks at orders nobody has touched for a while.
    changes = {"processed_in": processor.region} if processor.worker else {}
    Order.objects.filter(pk=order.pk).update(attempts=F("attempts") + 1, updated_at=Now(), **changes)
    return order, reserved_items(order)


def reserved_items(order: Order) -> list[ReservedItem]:
    """The items of an order whose stock is reserved, as its confirmation names them, in product id order."""
    return [
        ReservedItem(sku=sku, name=name, quantity=quantity)
        for sku, name, quantity in order.items.order_by("product_id").values_list(
            "product__sku", "product__name", "quantity"
        )
    ]


def _reserve_stock(order: Order, processor: Processor) -> list[ReservedItem] | None:
    """Take the order's units from stock, or fail the order if any product is short. Returns the items."""
    rows = statements.take_stock(order.pk)
    short = [sku for sku, _, stock, quantity in rows if stock < quantity]
    if short:
        reason = f"Out of stock: {', '.join(short)}"
        _fail(order.pk, source=Status.PROCESSING, reason=reason, release_stock=False, processor=processor)
        return None
    return [ReservedItem(sku=sku, name=name, quantity=quantity) for sku, name, _, quantity in rows]


def _quantity_ordered(order: Order) -> Subquery:
    return Subquery(OrderItem.objects.filter(order=order, product=OuterRef("pk")).values("quantity")[:1])


@transaction.atomic
def _complete(order: Order, charge: Charge, items: list[ReservedItem], processor: Processor) -> Order | None:
    completed = statements.transition(
        order.pk,
        source=(Status.PROCESSING,),
        target=Status.COMPLETED,
        payment_reference=charge.id,
        **_processed_by(processor),
    )
    if completed is None:
        return None  # a duplicate delivery completed (or an operator failed) it first
    publish_on_commit(
        *notifications_owed(completed, items=items),
        event_message("order_completed", **_event_data(completed)),
    )
    return completed


def fail_order(*, order_id: OrderId, reason: str, processor: Processor = NO_PROCESSOR) -> Order | None:
    """Record the final failure of a pending or processing order, releasing reserved stock. None if already final."""
    return _fail(order_id, source=Status.PROCESSING, reason=reason, release_stock=True, processor=processor) or _fail(
        order_id, source=Status.PENDING, reason=reason, release_stock=False, processor=processor
    )


@transaction.atomic
def _fail(
    order_id: OrderId, *, source: str, reason: str, release_stock: bool, processor: Processor = NO_PROCESSOR
) -> Order | None:
    order = statements.transition(
        order_id,
        source=(source,),
        target=Status.FAILED,
        note=reason,
        failure_reason=reason,
        **_processed_by(processor),
    )
    if order is None:
        return None
    if release_stock:
        Product.objects.filter(order_items__order=order).update(stock=F("stock") + _quantity_ordered(order))
    publish_on_commit(
        *notifications_owed(order, items=[]),
        event_message("order_failed", **_event_data(order), reason=reason),
    )
    return order


@transaction.atomic
def cancel_order(*, order_id: OrderId) -> Order:
    """Cancel an order that has not started processing; 409 once it has."""
    order = statements.transition(
        order_id, source=(Status.PENDING,), target=Status.CANCELLED, note="Cancelled by the customer."
    )
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
def retry_order(*, order_id: OrderId) -> Order:
    """Reopen a failed order (as ops decide) and schedule its processing again. The charge key stays the same,
    so an order that was charged before it failed is not charged twice."""
    order = statements.transition(
        order_id, source=(Status.FAILED,), target=Status.PENDING, note="Retried by an operator.", failure_reason=""
    )
    if order is None:
        current = Order.objects.filter(pk=order_id).first()
        if current is None:
            raise OrderNotFound(f"Order {order_id} does not exist.")
        raise OrderNotRetryable(
            f"Only a failed order can be retried; this one is {current.status}.", details={"status": current.status}
        )
    publish_on_commit(process_order_message(order))
    return order


def notifications_owed(order: Order, *, items: list[ReservedItem]) -> list[OutboxMessage]:
    """The notification tasks a final order owes its customer: email always, push when they gave a topic.

    A completed order's confirmation lists its `items`; a failed order's email says why.
    """
    kind = NOTIFICATION_OWED[order.status]
    if kind == NotificationKind.ORDER_CONFIRMATION:
        context: dict = {
            "order_id": str(order.pk),
            "total": str(order.total),
            "currency": order.currency,
            "items": [{"sku": item.sku, "name": item.name, "quantity": item.quantity} for item in items],
        }
    else:
        context = {"order_id": str(order.pk), "reason": order.failure_reason}
    recipients = {NotificationChannel.EMAIL: order.email, NotificationChannel.PUSH: order.push_topic}
    return [
        task_message(
            send_notification_task,
            order_id=str(order.pk),
            channel=channel,
            kind=kind,
            recipient=recipient,
            context=context,
            region=order.region,  # it carries the customer's address: it goes to the order's region (jobs/routing.py)
        )
        for channel, recipient in recipients.items()
        if recipient
    ]


def _event_data(order: Order) -> dict:
    return {"order_id": str(order.pk), "region": order.region, "total": str(order.total), "currency": order.currency}
