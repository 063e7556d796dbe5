"""The reconcilers: orders and notifications whose message was lost are scheduled again, after their threshold."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import OutboxMessage
from notifications.models import Notification
from orders import reconciliation
from orders.models import Order
from tests.orders.helpers import outbox, place

pytestmark = pytest.mark.django_db

Status = Order.Status


def test_reconcile_schedules_orders_stuck_for_too_long(product):
    stuck_processing, stuck_pending, fresh = place(), place(), place()
    Order.objects.filter(pk=stuck_processing.pk).update(status=Status.PROCESSING)
    long_ago = timezone.now() - timedelta(hours=1)
    Order.objects.filter(pk__in=[stuck_processing.pk, stuck_pending.pk]).update(updated_at=long_ago)

    count = reconciliation.reconcile_stuck_orders(stuck_after=timedelta(minutes=15))
    again = reconciliation.reconcile_stuck_orders(stuck_after=timedelta(minutes=15))

    assert count == 2
    assert again == 0
    scheduled = [message.payload["order_id"] for message in outbox("task", "orders.process_order")]
    assert sorted(scheduled[3:]) == sorted([str(stuck_processing.id), str(stuck_pending.id)])
    assert str(fresh.id) not in scheduled[3:]


def test_reconcile_sends_again_the_notifications_of_final_orders_that_have_none(product, settings):
    # given: final orders an hour old - one whose confirmation was sent, one whose email message was lost (no row),
    # one whose sender died (a stale claim), a failed one with its push lost; and one completed a minute ago
    settings.PUSH_URL = "http://push.invalid"
    names = ("sent", "lost", "stale", "failed", "recent")
    sent, lost, stale, failed, recent = (place(email=f"{name}@example.com") for name in names)
    Order.objects.filter(pk__in=[sent.pk, lost.pk, stale.pk, recent.pk]).update(status=Status.COMPLETED)
    Order.objects.filter(pk=failed.pk).update(status=Status.FAILED, failure_reason="Payment declined", push_topic="ops")
    Order.objects.exclude(pk=recent.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    email = {"channel": "email", "recipient": "x"}
    Notification.objects.create(order_id=sent.pk, kind="order_confirmation", status="sent", **email)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Notification.objects.create(order_id=stale.pk, kind="order_confirmation", claimed_at=an_hour_ago, **email)
    Notification.objects.create(order_id=failed.pk, kind="order_failed", status="sent", **email)

    # when
    count = reconciliation.reconcile_notifications(missing_after=timedelta(minutes=15))

    # then: one message per owed channel of the three orders missing theirs, with what the first message carried
    assert count == 3
    scheduled = {
        (message.payload["order_id"], message.payload["channel"], message.payload["kind"]): message.payload["context"]
        for message in OutboxMessage.objects.filter(name="notifications.send_notification")
    }
    assert sorted(scheduled) == sorted([
        (str(lost.id), "email", "order_confirmation"),
        (str(stale.id), "email", "order_confirmation"),
        (str(failed.id), "email", "order_failed"),
        (str(failed.id), "push", "order_failed"),
    ])  # fmt: skip
    assert scheduled[(str(lost.id), "email", "order_confirmation")] == {
        "order_id": str(lost.id),
        "total": "20.00",
        "currency": "EUR",
        "items": [{"sku": "MUG-001", "name": product.name, "quantity": 2}],
    }
    assert scheduled[(str(failed.id), "push", "order_failed")] == {
        "order_id": str(failed.id),
        "reason": "Payment declined",
    }


def test_reconcile_with_no_threshold_schedules_every_unfinished_order(settings, product):
    settings.ORDER_STUCK_AFTER_SECONDS = 3600
    pending, completed = place(), place()
    Order.objects.filter(pk=completed.pk).update(status=Status.COMPLETED)

    count = reconciliation.reconcile_stuck_orders(stuck_after=timedelta(0))

    assert count == 1
    scheduled = [message.payload["order_id"] for message in outbox("task", "orders.process_order")]
    assert (scheduled.count(str(pending.id)), scheduled.count(str(completed.id))) == (2, 1)  # placed, then again
