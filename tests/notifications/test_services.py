from datetime import timedelta

import pytest
from django.core import mail
from django.template.loader import render_to_string
from django.utils import timezone

from jobs.models import OutboxMessage
from notifications import services
from notifications.exceptions import ChannelUnavailable, NotificationBusy
from notifications.models import Notification

pytestmark = pytest.mark.django_db

ORDER_ID = "0b6bd2b5-7c1a-4a5e-9d27-3f1c6f1d2c11"
CONFIRMATION = {
    "order_id": ORDER_ID,
    "total": "25.00",
    "currency": "EUR",
    "items": [{"sku": "MUG-001", "name": "Mug", "quantity": 2}],
}


def send(channel: str = "email", kind: str = "order_confirmation", recipient: str = "ada@example.com", context=None):
    return services.send_notification(
        order_id=ORDER_ID, channel=channel, kind=kind, recipient=recipient, context=context or CONFIRMATION
    )


def test_an_email_is_sent_once_however_often_the_task_runs():
    first = send()
    second = send()

    assert (first, second) == ("sent", "sent")
    [email] = mail.outbox
    assert email.to == ["ada@example.com"]
    assert email.subject == f"Your order {ORDER_ID} is confirmed"
    assert "2 x Mug (MUG-001)" in email.body
    assert "Total: 25.00 EUR" in email.body
    assert email.extra_headers["Message-ID"] == f"<{ORDER_ID}.order_confirmation@shop.example>"
    notification = Notification.objects.get()
    assert (notification.status, notification.attempts) == ("sent", 1)
    assert notification.sent_at is not None
    [event] = OutboxMessage.objects.filter(name="notification_sent")
    assert event.payload == {"order_id": ORDER_ID, "channel": "email", "kind": "order_confirmation"}


def test_a_failure_email_says_why():
    send(kind="order_failed", context={"order_id": ORDER_ID, "reason": "Payment declined: Your card was declined."})

    [email] = mail.outbox
    assert email.subject == f"We could not complete your order {ORDER_ID}"
    assert "Reason: Payment declined: Your card was declined." in email.body


def test_a_push_goes_to_the_push_server(push_server):
    assert send(channel="push", recipient="ada-orders") == "sent"
    assert send(channel="push", recipient="ada-orders") == "sent"

    assert push_server.received == [
        {
            "topic": "ada-orders",
            "title": f"Your order {ORDER_ID} is confirmed",
            "body": mail_body_of_confirmation(),
        }
    ]


def mail_body_of_confirmation() -> str:
    return render_to_string("notifications/order_confirmation.txt", CONFIRMATION)


def test_an_unavailable_push_server_is_retried_then_sends(push_server):
    push_server.next_statuses = [503]

    with pytest.raises(ChannelUnavailable):
        send(channel="push", recipient="ada-orders")
    notification = Notification.objects.get()
    assert (notification.status, notification.claimed_at) == ("sending", None)
    assert notification.last_error == "The push server answered 503."

    assert send(channel="push", recipient="ada-orders") == "sent"
    assert len(push_server.received) == 1
    assert Notification.objects.get().attempts == 2


def test_a_refused_push_is_final(push_server):
    push_server.next_statuses = [400]

    assert send(channel="push", recipient="ada-orders") == "failed"

    notification = Notification.objects.get()
    assert notification.status == "failed"
    assert notification.last_error.startswith("The push server refused the message: 400")


def test_an_unreachable_push_server_is_transient(settings):
    settings.PUSH_URL = "http://127.0.0.1:9"  # the discard port: nothing listens

    with pytest.raises(ChannelUnavailable):
        send(channel="push", recipient="ada-orders")


def test_a_push_without_a_push_server_is_skipped(settings):
    settings.PUSH_URL = ""

    assert send(channel="push", recipient="ada-orders") == "skipped"
    assert Notification.objects.get().status == "skipped"


def claimed(at) -> Notification:
    return Notification.objects.create(
        order_id=ORDER_ID,
        channel="email",
        kind="order_confirmation",
        recipient="ada@example.com",
        status="sending",
        attempts=1,
        claimed_at=at,
    )


def test_a_fresh_claim_by_another_worker_means_try_again_later():
    claimed(timezone.now())

    with pytest.raises(NotificationBusy):
        send()
    assert mail.outbox == []


def test_a_stale_claim_of_a_dead_worker_is_taken_over():
    claimed(timezone.now() - timedelta(seconds=services.CLAIM_STALE_AFTER_SECONDS + 30))

    assert send() == "sent"
    assert len(mail.outbox) == 1
    assert Notification.objects.get().attempts == 2


def test_recording_a_failure_never_touches_a_sent_notification():
    send()

    services.record_failure(order_id=ORDER_ID, channel="email", kind="order_confirmation", reason="late")

    assert Notification.objects.get().status == "sent"
