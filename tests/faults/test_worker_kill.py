"""Issue 5, fault 1: a worker SIGKILLed while `process_order` runs; another worker (or process) finishes the order.

With the shipped timings: a whole worker's messages come back through the worker registry's reaper (the
replacement reaps as it starts), not the visibility timeout; test_worker_death.py holds the time bound."""

import os
import signal

import pytest

from orders.models import Order
from tests.factories import ProductFactory
from tests.faults.helpers import assert_completed_exactly_once, place_one, wait_for_orders, wait_until_processing

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# Long enough to be caught mid-charge.
CHARGE_SECONDS = 2.5


def test_a_worker_killed_mid_task_is_replaced_and_the_order_completes_once(faults):
    product = ProductFactory(sku="MUG-001", stock=10)
    doomed = faults.start_worker(PAYMENT_SANDBOX_LATENCY_MS=str(int(CHARGE_SECONDS * 1000)))
    order = place_one("killed-worker@example.com")
    wait_until_processing(order)

    # when: the whole worker (main process and pool child) dies at once, as when the OOM killer or a node takes it
    doomed.kill_group()
    faults.start_worker()

    # then: the replacement reaps the dead worker's message once its registry heartbeat has expired
    wait_for_orders([order.pk], timeout=60)
    assert_completed_exactly_once(faults, [order])
    product.refresh_from_db()
    assert product.stock == 8
    assert Order.objects.get(pk=order.pk).attempts == 2


def test_a_pool_child_killed_mid_task_is_replaced_and_the_order_completes_once(faults):
    product = ProductFactory(sku="MUG-001", stock=10)
    worker = faults.start_worker(PAYMENT_SANDBOX_LATENCY_MS=str(int(CHARGE_SECONDS * 1000)))
    order = place_one("killed-child@example.com")
    wait_until_processing(order)
    (child,) = worker.pool_children()

    # when: only the pool process running the task dies; the main process sees it lost and requeues the message
    os.kill(child.pid, signal.SIGKILL)

    # then: a new pool child of the same worker runs it again and finds the order already reserved
    wait_for_orders([order.pk], timeout=60)
    assert_completed_exactly_once(faults, [order])
    product.refresh_from_db()
    assert product.stock == 8
    assert Order.objects.get(pk=order.pk).attempts == 2
    assert worker.process.poll() is None
    assert "WorkerLostError" in worker.log()
    assert [process.pid for process in worker.pool_children()] != [child.pid]
