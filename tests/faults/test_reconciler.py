"""Issue 5, fault 7: an order left `processing` by a worker that vanished, its message lost with it, is picked up
again by the stuck-order reconciler once it has been stuck longer than ORDER_STUCK_AFTER_SECONDS."""

import time
from datetime import timedelta

import pytest

from orders.models import Order
from orders.reconciliation import reconcile_stuck_orders
from orders.tasks import reconcile_stuck_orders_task
from tests.factories import ProductFactory
from tests.faults.helpers import (
    assert_completed_exactly_once,
    place_one,
    queue_lengths,
    wait_for_orders,
    wait_until_processing,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# Shortened (the shipped threshold is ORDER_STUCK_AFTER_SECONDS): this proves the mechanism, that an order is
# rescheduled after the threshold and not before; longer than the reaper's bound, as the shipped one is.
STUCK_AFTER_SECONDS = 8


def test_an_order_abandoned_in_processing_is_reconciled_after_the_threshold_and_completed_once(
    faults_without_persistence,
):
    faults = faults_without_persistence
    product = ProductFactory(sku="MUG-001", stock=10)
    doomed = faults.start_worker(PAYMENT_SANDBOX_LATENCY_MS="2500")
    order = place_one("abandoned@example.com", quantity=1)
    wait_until_processing(order)
    # given: the worker vanishes mid-charge, and its unacknowledged message is lost with a Redis that crashed
    doomed.kill_group()
    faults.broker.restart(crash=True)
    assert queue_lengths(faults) == {"orders": 0, "unacked": 0}
    faults.start_worker(ORDER_STUCK_AFTER_SECONDS=str(STUCK_AFTER_SECONDS))
    stuck_since = Order.objects.get(pk=order.pk).updated_at

    # then: before the threshold, the reconciler leaves it alone (a live worker may still be on it)
    assert reconcile_stuck_orders(stuck_after=timedelta(seconds=STUCK_AFTER_SECONDS)) == 0

    # when: past the threshold, beat's tick runs the reconciler on a worker (maintenance queue)
    time.sleep(max(0.0, STUCK_AFTER_SECONDS + 0.5 - (time.time() - stuck_since.timestamp())))
    reconcile_stuck_orders_task.apply_async()

    # then: processing resumes from the reserved stock, with the same charge key: one charge, one email
    wait_for_orders([order.pk], timeout=60)
    assert_completed_exactly_once(faults, [order])
    order.refresh_from_db()
    assert order.attempts == 2
    product.refresh_from_db()
    assert product.stock == 9
    assert reconcile_stuck_orders(stuck_after=timedelta(0)) == 0  # a completed order is never scheduled again
