"""Issue 14: each order processed in its region; a strict region's orders never leave it, the others fall back to
the public pool. Real worker processes, one per region as `WORKER_REGION=<region> celery -A proj worker` starts
them, on a Redis of the test's own; the shipped routing settings (PUBLIC_FALLBACK_AFTER_SECONDS and the registry's
timings) unless a test says otherwise."""

import time

import pytest
from django.conf import settings

from orders.models import Order, OrderEvent
from orders.services import RequestedItem, place_order
from tests.factories import ProductFactory
from tests.faults.helpers import assert_completed_exactly_once, wait_for_orders, wait_until_processing

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# A live worker is in the registry within a heartbeat; the router's view of a region is at most this old.
ROUTER_SEES_WORKERS_SECONDS = settings.WORKER_HEARTBEAT_INTERVAL_SECONDS + 2.5


def place(email: str, *, region: str, token: str = "tok_visa") -> Order:
    return place_order(email=email, region=region, items=[RequestedItem("MUG-001", 1)], payment_token=token).order


def workers_of(order: Order) -> set[str]:
    """The workers that changed the order (its timeline entries made by a worker)."""
    return set(OrderEvent.objects.filter(order=order).exclude(worker="").values_list("worker", flat=True))


def test_a_strict_order_waits_in_its_region_and_completes_there_once_a_worker_of_it_is_back(faults):
    # given: the US and public pools run, the EU one does not
    ProductFactory(sku="MUG-001", stock=10)
    faults.start_worker(WORKER_REGION="us")
    public = faults.start_worker(WORKER_REGION="public")
    time.sleep(ROUTER_SEES_WORKERS_SECONDS)

    # when: an EU order is placed
    order = place("eu-waits@example.com", region="eu")

    # then: it waits in its region's queue, untouched - not failed, not moved to the public pool
    time.sleep(settings.PUBLIC_FALLBACK_AFTER_SECONDS + 2 * settings.WORKER_HEARTBEAT_INTERVAL_SECONDS)
    order.refresh_from_db()
    assert (order.status, order.attempts, order.processed_in) == (Order.Status.PENDING, 0, "")
    assert faults.broker_client().llen("cloud.eu") == 1
    assert faults.broker_client().llen("public_fallback") == 0

    # when: an EU worker starts
    eu = faults.start_worker(WORKER_REGION="eu")

    # then: it completes there, once, and nowhere else
    wait_for_orders([order.pk], timeout=30)
    assert_completed_exactly_once(faults, [order])
    order.refresh_from_db()
    assert order.processed_in == "eu"
    assert workers_of(order) == {eu.hostname}
    assert str(order.pk) not in public.log()


def test_a_non_strict_order_goes_to_the_public_pool_when_its_region_has_no_worker_and_to_its_region_when_it_has(
    faults,
):
    ProductFactory(sku="MUG-001", stock=10)
    public = faults.start_worker(WORKER_REGION="public")
    time.sleep(ROUTER_SEES_WORKERS_SECONDS)

    # when: a US order, with no US worker alive
    fallen_back = place("us-public@example.com", region="us")

    # then: the public pool processes it at once
    wait_for_orders([fallen_back.pk], timeout=15)
    fallen_back.refresh_from_db()
    assert fallen_back.processed_in == "public"
    assert workers_of(fallen_back) == {public.hostname}

    # when: a US worker is up, another US order
    us = faults.start_worker(WORKER_REGION="us")
    time.sleep(ROUTER_SEES_WORKERS_SECONDS)
    at_home = place("us-home@example.com", region="us")

    # then: its region processes it
    wait_for_orders([at_home.pk], timeout=15)
    at_home.refresh_from_db()
    assert at_home.processed_in == "us"
    assert workers_of(at_home) == {us.hostname}
    assert_completed_exactly_once(faults, [fallen_back, at_home])


def test_a_non_strict_order_left_in_its_region_when_its_workers_died_is_moved_to_the_public_pool_and_completes(
    faults,
):
    # given: a US worker busy on one order (a slow bank) with a second waiting behind it in the US queue
    ProductFactory(sku="MUG-001", stock=10)
    doomed = faults.start_worker(WORKER_REGION="us", PAYMENT_SANDBOX_LATENCY_MS="4000")
    faults.start_worker(WORKER_REGION="public")
    time.sleep(ROUTER_SEES_WORKERS_SECONDS)
    running = place("us-running@example.com", region="us")
    wait_until_processing(running)
    waiting = place("us-waiting@example.com", region="us")
    assert faults.broker_client().llen("cloud.us") == 1

    # when: the US pool dies
    doomed.kill_group()
    killed_at = time.monotonic()

    # then: both end up in the public pool - the running one reaped back to the US queue first - and complete once
    bound = settings.WORKER_REGISTRY_TTL_SECONDS + settings.PUBLIC_FALLBACK_AFTER_SECONDS + 15
    wait_for_orders([running.pk, waiting.pk], timeout=bound)
    assert time.monotonic() - killed_at <= bound
    assert_completed_exactly_once(faults, [running, waiting])
    for order in (running, waiting):
        order.refresh_from_db()
        timeline = list(OrderEvent.objects.filter(order=order).values_list("status", "worker"))
        assert order.processed_in == "public", timeline
    assert "to public_fallback" in faults.logs()  # the workers moved them (all but the public one are dead)


def test_a_strict_order_that_retries_stays_in_its_region(faults):
    # given: the EU and public pools, and a bank that times out twice before it answers (tok_timeout)
    ProductFactory(sku="MUG-001", stock=10)
    eu = faults.start_worker(WORKER_REGION="eu", PAYMENT_SANDBOX_TIMEOUTS_BEFORE_SUCCESS="2")
    public = faults.start_worker(WORKER_REGION="public")
    time.sleep(ROUTER_SEES_WORKERS_SECONDS)

    # when
    order = place("eu-retries@example.com", region="eu", token="tok_timeout")

    # then: every attempt ran in the EU (Celery once sent retries to the default queue: celery/celery#8357)
    wait_for_orders([order.pk], timeout=60)
    order.refresh_from_db()
    assert (order.status, order.processed_in, order.attempts) == (Order.Status.COMPLETED, "eu", 3)
    assert workers_of(order) == {eu.hostname}
    assert str(order.pk) not in public.log()
    assert_completed_exactly_once(faults, [order])
