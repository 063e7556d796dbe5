"""Issue 5, fault 4: the broker is down (or hangs) when an order is placed; placing still succeeds, promptly."""

import json
import os
import signal
import time

import pytest

from jobs.models import OutboxMessage
from jobs.outbox import relay_outbox
from orders.models import Order
from tests.factories import ProductFactory
from tests.faults.helpers import assert_completed_exactly_once, wait_for_orders
from tests.helpers import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# What "promptly" means for a customer waiting on POST /api/orders while Redis is away.
PROMPT_SECONDS = 2.5


def post_order(client, email: str):
    body = {"email": email, "region": "eu", "payment_token": "tok_visa", "items": [{"sku": "MUG-001", "quantity": 1}]}
    started = time.monotonic()
    response = client.post("/api/orders", json.dumps(body), content_type="application/json")
    return response, time.monotonic() - started


def relay_until_sent(order: Order) -> None:
    """What beat's relay-outbox tick does every 2 s, until the order's task message is published."""
    wait_for(
        lambda: (
            relay_outbox().tasks_sent
            or OutboxMessage.objects.filter(
                name="orders.process_order", payload={"order_id": str(order.pk), "region": "eu"}, sent_at__isnull=False
            ).exists()
        ),
        timeout=30,
        interval=0.5,
        message="the relay to publish the order's task",
    )


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_an_order_placed_while_the_broker_is_down_is_accepted_at_once_and_completes_later(
    faults, client, settings, outage
):
    settings.OUTBOX_RELAY_AFTER_SECONDS = 0
    ProductFactory(sku="MUG-001", stock=10)
    if outage == "stopped":
        faults.broker.stop()  # connections are refused
    else:
        os.kill(faults.broker.process.pid, signal.SIGSTOP)  # connections are accepted, and never answered

    response, seconds = post_order(client, "broker-down@example.com")

    assert response.status_code == 201, response.content
    assert seconds < PROMPT_SECONDS
    order = Order.objects.get(pk=response.json()["id"])
    assert order.status == Order.Status.PENDING
    message = OutboxMessage.objects.get(
        name="orders.process_order", payload={"order_id": str(order.pk), "region": "eu"}
    )
    assert (message.sent_at, message.publish_attempts) == (None, 1)

    # when: Redis is back, with a worker, and the relay runs
    if outage == "stopped":
        faults.broker.start()
    else:
        os.kill(faults.broker.process.pid, signal.SIGCONT)
    faults.start_worker()
    relay_until_sent(order)

    # then
    wait_for_orders([order.pk], timeout=30)
    assert_completed_exactly_once(faults, [order])
