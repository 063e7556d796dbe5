"""The admin: orders found by status, region and date with their timeline; actions that go through services."""

import pytest

from jobs.models import DeadLetter, OutboxMessage
from orders.models import Order, OrderEvent
from tests.ops.helpers import make_order

pytestmark = pytest.mark.django_db

Status = Order.Status


def run_action(admin_client, url: str, action: str, objects) -> list[str]:
    """Run an admin action on `objects`; return the messages the page then shows (which consumes them)."""
    response = admin_client.post(
        url, {"action": action, "_selected_action": [str(obj.pk) for obj in objects]}, follow=True
    )
    assert response.redirect_chain == [(url, 302)]
    return [str(message) for message in response.context["messages"]]


def test_orders_are_filtered_by_status_and_region(admin_client):
    failed_eu = make_order(status=Status.FAILED, region="eu", seconds_to_final=5)
    make_order(status=Status.FAILED, region="us", seconds_to_final=5)
    make_order(status=Status.COMPLETED, region="eu", seconds_to_final=5)

    response = admin_client.get("/admin/orders/order/", {"status__exact": "failed", "region__exact": "eu"})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [failed_eu]


def test_an_order_shows_its_items_and_timeline_read_only(admin_client):
    order = make_order(status=Status.FAILED, seconds_to_final=5, failure_reason="Payment declined: no funds")

    response = admin_client.get(f"/admin/orders/order/{order.pk}/change/")

    assert response.status_code == 200
    content = response.content.decode()
    assert "moved to failed" in content
    assert "Payment declined: no funds" in content
    assert 'name="_save"' not in content
    assert admin_client.post(f"/admin/orders/order/{order.pk}/change/", {"email": "x@example.com"}).status_code == 403
    assert "delete_selected" not in response.context["adminform"].form.fields


def test_retrying_failed_orders_reopens_them_through_the_outbox(admin_client):
    failed = make_order(status=Status.FAILED, seconds_to_final=5, failure_reason="Processing gave up")
    completed = make_order(status=Status.COMPLETED, seconds_to_final=5)

    messages = run_action(admin_client, "/admin/orders/order/", "retry_failed_orders", [failed, completed])

    failed.refresh_from_db()
    completed.refresh_from_db()
    assert (failed.status, failed.failure_reason) == (Status.PENDING, "")
    assert completed.status == Status.COMPLETED
    [message] = OutboxMessage.objects.filter(name="orders.process_order")
    assert message.payload == {"order_id": str(failed.pk), "region": "eu"}
    assert OrderEvent.objects.filter(order=failed).last().note == "Retried by an operator."
    assert messages == [
        "Scheduled 1 order(s) for processing again.",
        f"Skipped 1: {completed}: Only a failed order can be retried; this one is completed.",
    ]


def test_cancelling_pending_orders_leaves_the_others(admin_client):
    pending = make_order(status=Status.PENDING)
    processing = make_order(status=Status.PROCESSING)

    messages = run_action(admin_client, "/admin/orders/order/", "cancel_pending_orders", [pending, processing])

    pending.refresh_from_db()
    processing.refresh_from_db()
    assert (pending.status, processing.status) == (Status.CANCELLED, Status.PROCESSING)
    assert OutboxMessage.objects.filter(kind="event", name="order_cancelled").count() == 1
    assert messages[0] == "Cancelled 1 order(s)."


def test_dead_letters_are_replayed_or_discarded(admin_client, django_capture_on_commit_callbacks):
    order = make_order(status=Status.FAILED, seconds_to_final=5)
    to_replay = DeadLetter.objects.create(
        task_id="t-1", task_name="orders.process_order", kwargs={"order_id": str(order.pk)}, reason="gave up"
    )
    to_discard = DeadLetter.objects.create(task_id="t-2", task_name="orders.process_order", reason="poison")

    with django_capture_on_commit_callbacks(execute=False):
        replayed = run_action(admin_client, "/admin/jobs/deadletter/", "replay", [to_replay])
    discarded = run_action(admin_client, "/admin/jobs/deadletter/", "discard", [to_discard])

    to_replay.refresh_from_db()
    assert to_replay.replayed_at is not None
    order.refresh_from_db()
    assert order.status == Status.PENDING
    assert list(DeadLetter.objects.values_list("task_id", flat=True)) == ["t-1"]
    assert (replayed, discarded) == (["Replayed 1 dead letter(s)."], ["Discarded 1 dead letter(s)."])


def test_the_outbox_lists_unsent_rows(admin_client):
    unsent = OutboxMessage.objects.create(kind="task", name="orders.process_order")
    OutboxMessage.objects.create(kind="task", name="orders.process_order", sent_at=unsent.created_at)

    response = admin_client.get("/admin/jobs/outboxmessage/", {"sent_at__isempty": "1"})

    assert list(response.context["cl"].result_list) == [unsent]


@pytest.mark.parametrize(
    "url",
    [
        "/admin/notifications/notification/",
        "/admin/analytics/event/",
        "/admin/jobs/taskdelivery/",
        "/admin/jobs/deadletter/",
    ],
)
def test_other_ops_tables_are_listed(admin_client, url):
    assert admin_client.get(url).status_code == 200
