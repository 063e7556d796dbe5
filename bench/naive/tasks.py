"""The article's tasks: fetch the order, do the work, save, fan out. No guards, no retries, no idempotency."""

import uuid

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone

from analytics.models import Event
from bench.naive.celery import app
from orders.models import Order, Product
from orders.payments import get_gateway


@app.task(name="naive.process_order")
def process_order(order_id: str) -> None:
    order = Order.objects.get(pk=order_id)
    with transaction.atomic():
        for item in order.items.all():
            Product.objects.filter(pk=item.product_id).update(stock=F("stock") - item.quantity)
        order.status = Order.Status.PROCESSING
        order.updated_at = timezone.now()
        order.save()
    charge = get_gateway().charge(
        amount=order.total,
        currency=order.currency,
        token=order.payment_token,
        idempotency_key=f"order-{order.id}",
        description=f"Order {order.id}",
    )
    order.status = Order.Status.COMPLETED
    order.payment_reference = charge.id
    order.updated_at = timezone.now()
    order.save()
    send_order_confirmation.delay(order_id)
    track_event.delay("order_completed", order_id)


@app.task(name="naive.send_order_confirmation")
def send_order_confirmation(order_id: str) -> None:
    order = Order.objects.get(pk=order_id)
    context = {
        "order_id": str(order.pk),
        "total": str(order.total),
        "currency": order.currency,
        "items": [
            {"sku": item.product.sku, "name": item.product.name, "quantity": item.quantity}
            for item in order.items.select_related("product")
        ],
    }
    subject = render_to_string("notifications/order_confirmation_subject.txt", context).strip()
    body = render_to_string("notifications/order_confirmation.txt", context)
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [order.email])


@app.task(name="naive.track_event")
def track_event(event_type: str, order_id: str) -> None:
    order = Order.objects.get(pk=order_id)
    Event.objects.create(
        event_id=uuid.uuid4(),
        event_type=event_type,
        order_id=order.pk,
        data={"order_id": str(order.pk), "region": order.region, "total": str(order.total)},
        occurred_at=timezone.now(),
    )
