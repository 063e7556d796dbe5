"""Issue 5, fault 3: Redis restarts while orders are in flight.

With persistence (append-only file, appendfsync everysec, as docker-compose.yml runs the broker) nothing is lost:
every order completes once, with one email and one analytics event. Without persistence, the second test documents
exactly what is lost and what recovers it.
"""

import time
from datetime import timedelta

import pytest
from django.db.models import Count

from analytics.models import Event
from jobs import registry, routing
from jobs.models import DeadLetter, OutboxMessage
from jobs.outbox import relay_outbox
from orders.models import Order
from orders.reconciliation import reconcile_notifications, reconcile_stuck_orders
from orders.services import RequestedItem, place_order
from proj.celery import app as celery_app
from tests.factories import ProductFactory
from tests.faults.helpers import (
    assert_completed_exactly_once,
    assert_events_recorded_once,
    queue_lengths,
    wait_for_orders,
)
from tests.helpers import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ORDERS_IN_FLIGHT = 500


def place(count: int, *, prefix: str, region: str = "eu") -> list[Order]:
    return [
        place_order(
            email=f"{prefix}{index}@example.com",
            region=region,
            items=[RequestedItem("MUG-001", 1)],
            payment_token="tok_visa",
        ).order
        for index in range(count)
    ]


def consumers_of(queue: str) -> int:
    """Live workers consuming `queue`, as the router reads them (its view is a few seconds old at most)."""
    routing._region_states.clear()
    with celery_app.connection_for_write() as connection:
        workers = registry.live_workers(connection.default_channel.client)
    return sum(queue in worker.queues for worker in workers)


def completed_count(orders) -> int:
    return Order.objects.filter(pk__in=[order.pk for order in orders], status=Order.Status.COMPLETED).count()


def state_of(orders) -> dict:
    """What a failing test reports: orders by status, events by type, the outbox backlog, dead letters."""
    order_ids = [order.pk for order in orders]
    return {
        "orders": dict(Order.objects.filter(pk__in=order_ids).values_list("status").annotate(count=Count("id"))),
        "events": dict(Event.objects.values_list("event_type").annotate(count=Count("id"))),
        "unsent outbox": OutboxMessage.objects.filter(sent_at__isnull=True).count(),
        "dead letters": list(DeadLetter.objects.values_list("task_name", "reason")[:5]),
    }


def relay_until(predicate, *, timeout: float, message: str, orders=()) -> None:
    """Run the outbox relay as beat does (every OUTBOX_RELAY_INTERVAL_SECONDS) until `predicate` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"Timed out after {timeout} s waiting for {message}: {state_of(orders)}"
        relay_outbox()
        time.sleep(0.5)


# kombu 5.7.0 could fail to close its Redis channel after the connection dropped and Celery then stopped the worker
# as unrecoverable; our transport closes such a channel without restoring through it (jobs/broker.py), so a worker
# lives through a Redis restart.
KOMBU_CLOSE_RACE = "Unrecoverable error"
# Longer than a backlog of 500 orders takes here, so only an order whose message was really lost is rescheduled.
STUCK_AFTER_SECONDS = 30


def operate_until(faults, workers: list, predicate, *, timeout: float, message: str, orders) -> None:
    """What production runs beside the workers, until `predicate` holds: beat's relay and stuck-order reconciler.
    No restart policy: a worker must not exit because Redis restarted."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"Timed out after {timeout} s waiting for {message}: {state_of(orders)}"
        relay_outbox()
        reconcile_stuck_orders(stuck_after=timedelta(seconds=STUCK_AFTER_SECONDS))
        assert all(worker.process.poll() is None for worker in workers), workers[-1].log()[-5000:]
        time.sleep(0.5)


def test_five_hundred_orders_survive_a_broker_restart_with_persistence(faults, settings):
    settings.OUTBOX_RELAY_AFTER_SECONDS = 1
    product = ProductFactory(sku="MUG-001", stock=ORDERS_IN_FLIGHT)
    workers = [faults.start_worker(concurrency=2)]
    orders = place(ORDERS_IN_FLIGHT, prefix="persistent")
    wait_for(lambda: completed_count(orders) >= 50, timeout=60, message="the first orders to complete")

    # when: Redis shuts down (writing its append-only file) and starts again, mid-run
    faults.broker.restart()
    in_redis_after_restart = queue_lengths(faults)
    completed_at_restart = completed_count(orders)

    # then: the messages waiting (or delivered, unacknowledged) came back from the append-only file, and every
    # order completes once, with one email and one event of each kind
    assert completed_at_restart < ORDERS_IN_FLIGHT
    assert in_redis_after_restart["orders"] + in_redis_after_restart["unacked"] > 0
    operate_until(
        faults,
        workers,
        lambda: (
            completed_count(orders) == ORDERS_IN_FLIGHT
            and Event.objects.filter(event_type="order_completed").count() == ORDERS_IN_FLIGHT
        ),
        timeout=150,
        message="every order to complete and reach analytics",
        orders=orders,
    )
    assert_completed_exactly_once(faults, orders, emails_timeout=60)
    assert_events_recorded_once(orders, event_type="order_placed")
    assert_events_recorded_once(orders, event_type="order_completed")
    product.refresh_from_db()
    assert product.stock == 0
    assert "Connection to broker lost" in workers[0].log()
    assert KOMBU_CLOSE_RACE not in workers[0].log()


def test_without_persistence_a_restart_loses_queued_messages_and_the_reconcilers_recover_them(
    faults_without_persistence, settings
):
    """What is lost when Redis restarts without persistence, and what recovers it (README "Guarantees").

    The outbox marks a row sent once Redis accepted it, so neither the fast path nor the relay publishes it again.
    What Redis held is gone, and each kind of message has its way back:
    - process_order messages: the stuck-order reconciler schedules those orders again;
    - send_notification messages: the notification reconciler sends the notifications final orders still owe;
    - analytics batches (track_events): no consumer confirmed their events, so the relay sends them again.
    Here the thresholds are zero and the test runs beat's three jobs itself; in production each waits longer than
    the visibility timeout (ORDER_STUCK_AFTER_SECONDS, NOTIFICATION_MISSING_AFTER_SECONDS,
    OUTBOX_EVENT_REDELIVER_AFTER_SECONDS).
    """
    faults = faults_without_persistence
    settings.OUTBOX_RELAY_AFTER_SECONDS = 1
    ProductFactory(sku="MUG-001", stock=100)
    # given: a first batch of US orders completed by a US worker whose router sends their emails to the public
    # pool (its fallback threshold is 0), which nobody consumes yet: the emails wait in Redis
    us_worker = faults.start_worker(WORKER_REGION="us", PUBLIC_FALLBACK_BACKLOG="0")
    wait_for(lambda: consumers_of("cloud.us"), timeout=10, message="the US worker in the registry")
    emails_lost = place(10, prefix="lost-email", region="us")
    wait_for_orders([order.pk for order in emails_lost], timeout=60)
    faults.processes.stop(us_worker.process)
    assert faults.broker_client().llen("public_fallback") == 10
    # and a second batch waiting in the EU queue (no EU worker), and every event so far relayed to analytics
    orders_lost = place(10, prefix="lost-order")
    assert relay_outbox().events_sent == 30  # 20 order_placed, 10 order_completed
    assert queue_lengths(faults) == {"orders": 10, "unacked": 0}

    # when: Redis restarts empty
    faults.broker.restart(crash=True)
    faults.start_worker(concurrency=2)

    # then: the loss, exactly - nothing is left to relay, the orders wait, no email went out, no event arrived
    assert relay_outbox().tasks_sent == 0
    assert Order.objects.filter(pk__in=[order.pk for order in orders_lost], status="pending").count() == 10
    assert Event.objects.count() == 0
    assert faults.emails_by_recipient() == {}

    # and the recovery: beat's jobs bring back every order, email and event, each once
    settings.OUTBOX_EVENT_REDELIVER_AFTER_SECONDS = 0
    assert reconcile_stuck_orders(stuck_after=timedelta(0)) == 10
    assert reconcile_notifications(missing_after=timedelta(0)) == 10
    everything = [*emails_lost, *orders_lost]
    relay_until(
        lambda: completed_count(everything) == 20 and Event.objects.count() == 60,
        timeout=60,
        message="the lost orders, emails and events to come back",
        orders=everything,
    )
    assert_completed_exactly_once(faults, everything)
    for event_type in ("order_placed", "order_completed", "notification_sent"):
        assert_events_recorded_once(everything, event_type=event_type)
    assert DeadLetter.objects.count() == 0
