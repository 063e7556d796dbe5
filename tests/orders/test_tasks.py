import pytest

from jobs.dead_letters import record_dead_letter, replay_dead_letter
from jobs.models import DeadLetter, OutboxMessage
from orders import services
from orders.models import Order
from orders.services import RequestedItem
from orders.tasks import process_order_task

pytestmark = pytest.mark.django_db


def test_giving_up_on_an_order_fails_it_with_the_reason(product):
    order = services.place_order(
        email="ada@example.com", region="eu", items=[RequestedItem("MUG-001", 1)], payment_token="tok_visa"
    ).order

    process_order_task.give_up("PaymentGatewayUnavailable: timed out", order_id=str(order.id))

    order.refresh_from_db()
    assert order.status == Order.Status.FAILED
    assert order.failure_reason == "Processing gave up: PaymentGatewayUnavailable: timed out"


def test_replaying_a_dead_lettered_order_reopens_and_schedules_it(product, django_capture_on_commit_callbacks):
    order = services.place_order(
        email="ada@example.com", region="eu", items=[RequestedItem("MUG-001", 1)], payment_token="tok_visa"
    ).order
    services.fail_order(order_id=str(order.id), reason="Processing gave up: timeout")
    dead_letter = record_dead_letter(
        task_id="t-1",
        task_name="orders.process_order",
        args=[],
        kwargs={"order_id": str(order.id)},
        reason="timeout",
        attempts=9,
    )

    with django_capture_on_commit_callbacks(execute=True):
        replay_dead_letter(dead_letter_id=dead_letter.pk)

    order.refresh_from_db()
    assert order.status == Order.Status.PENDING
    assert order.failure_reason == ""
    assert OutboxMessage.objects.filter(name="orders.process_order").count() == 2
    assert DeadLetter.objects.get().replayed_at is not None
