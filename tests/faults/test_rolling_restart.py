"""Issue 5, fault 2: a busy worker is sent SIGTERM, as a rolling restart does.

Workers run with REMAP_SIGTERM=SIGQUIT and CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT (proj/settings.py): a task that
finishes within the soft shutdown is acknowledged; one that does not is cancelled and its message goes back to the
queue for the next worker. Either way the worker exits within the grace period and the order completes once.
The soft shutdown is shortened to 3 s here: these prove the mechanism; the shipped 25 s inside the manifests' grace
period is run by tests/deploy/test_k8s_worker_process.py.
"""

import signal
import time

import pytest

from jobs import registry
from orders.models import Order
from tests.factories import ProductFactory
from tests.faults.helpers import (
    assert_completed_exactly_once,
    place_one,
    queue_lengths,
    wait_for_orders,
    wait_until_processing,
)
from tests.helpers import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]

SOFT_SHUTDOWN_SECONDS = 3
# What the orchestrator allows before SIGKILL (compose's stop_grace_period, the pod's terminationGracePeriodSeconds):
# the soft shutdown plus the cold shutdown's few seconds must fit inside it.
GRACE_SECONDS = SOFT_SHUTDOWN_SECONDS + 5


def terminate_while_processing(faults, *, charge_seconds: float):
    """Start a worker, SIGTERM it while it charges an order; return the order, the worker, and its exit time."""
    ProductFactory(sku="MUG-001", stock=10)
    worker = faults.start_worker(
        PAYMENT_SANDBOX_LATENCY_MS=str(int(charge_seconds * 1000)),
        CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT=str(SOFT_SHUTDOWN_SECONDS),
    )
    order = place_one("rolling@example.com", quantity=1)
    wait_until_processing(order)
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    worker.process.wait(timeout=GRACE_SECONDS + 10)
    return order, worker, time.monotonic() - started


def test_a_task_that_finishes_within_the_soft_shutdown_completes_before_the_worker_exits(faults):
    order, worker, exit_seconds = terminate_while_processing(faults, charge_seconds=1)

    # then: finished and acknowledged by the terminated worker itself; nothing is left for another one
    assert exit_seconds < GRACE_SECONDS
    assert worker.process.returncode >= 0  # it exited by itself, no signal killed it
    assert "Initiating Soft Shutdown" in worker.log()
    order.refresh_from_db()
    assert (order.status, order.attempts) == (Order.Status.COMPLETED, 1)
    assert queue_lengths(faults)["unacked"] == 0

    faults.start_worker()  # sends the confirmation queued meanwhile; must not process the order again
    assert_completed_exactly_once(faults, [order])
    assert Order.objects.get(pk=order.pk).attempts == 1


def test_a_task_longer_than_the_soft_shutdown_is_requeued_and_completed_once_by_the_next_worker(faults):
    order, worker, exit_seconds = terminate_while_processing(faults, charge_seconds=SOFT_SHUTDOWN_SECONDS + 3)

    # then: cancelled after the soft shutdown, its message back in the queue at once (not after the visibility
    # timeout), and the worker gone within the grace period
    assert SOFT_SHUTDOWN_SECONDS <= exit_seconds < GRACE_SECONDS
    assert worker.process.returncode >= 0
    assert Order.objects.get(pk=order.pk).status == Order.Status.PROCESSING
    assert queue_lengths(faults) == {"orders": 1, "unacked": 0}

    faults.start_worker()
    wait_for_orders([order.pk], timeout=60)
    assert_completed_exactly_once(faults, [order])
    assert Order.objects.get(pk=order.pk).attempts == 2


def test_sigterm_withdraws_readiness_at_once_and_vouches_for_the_worker_through_the_soft_shutdown(faults, tmp_path):
    # given: a worker with probe files, charging an order (so Celery's soft shutdown holds its event loop)
    ProductFactory(sku="MUG-001", stock=10)
    probes = tmp_path / "probes"
    worker = faults.start_worker(
        PAYMENT_SANDBOX_LATENCY_MS="2000",
        CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT=str(SOFT_SHUTDOWN_SECONDS),
        WORKER_PROBE_DIR=str(probes),
    )
    wait_for(lambda: (probes / "ready").exists(), timeout=30, message="the worker to be ready")
    order = place_one("draining@example.com", quantity=1)
    wait_until_processing(order)

    # when
    worker.process.send_signal(signal.SIGTERM)

    # then: not ready within a second, not the soft shutdown later; and the registry vouches for it past the
    # shutdown, so no other worker takes back the task it is finishing
    wait_for(lambda: not (probes / "ready").exists(), timeout=1, interval=0.05, message="readiness to be withdrawn")
    ttl = faults.broker_client().pttl(registry.alive_key(worker.hostname)) / 1000
    assert ttl > SOFT_SHUTDOWN_SECONDS
    worker.process.wait(timeout=GRACE_SECONDS + 10)
    order.refresh_from_db()
    assert (order.status, order.attempts) == (Order.Status.COMPLETED, 1)
