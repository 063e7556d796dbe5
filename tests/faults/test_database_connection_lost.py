"""Issue 5, fault 5: PostgreSQL drops the worker's connection (pg_terminate_backend) while `process_order` runs."""

import pytest
from django.db import connection

from jobs.models import OutboxMessage
from orders.models import OrderEvent
from tests.factories import ProductFactory
from tests.faults.helpers import assert_completed_exactly_once, place_one, wait_for_orders, wait_until_processing

pytestmark = [pytest.mark.faults, pytest.mark.integration]

POSTGRES_PORT = 5432


def terminate_database_connections_of(process) -> list[int]:
    """End, from the server side, every PostgreSQL session whose client socket belongs to `process`."""
    client_ports = [
        socket.laddr.port
        for socket in process.net_connections(kind="tcp")
        if socket.raddr and socket.raddr.port == POSTGRES_PORT
    ]
    assert client_ports, "the pool process has no database connection"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND client_port = ANY(%s)",
            [client_ports],
        )
        return [pid for pid, terminated in cursor.fetchall() if terminated]


def test_a_task_whose_database_connection_is_killed_retries_and_completes_once(faults):
    product = ProductFactory(sku="MUG-001", stock=10)
    worker = faults.start_worker(PAYMENT_SANDBOX_LATENCY_MS="1500")
    order = place_one("dropped-connection@example.com", quantity=3)
    wait_until_processing(order)
    (child,) = worker.pool_children()

    # when: the connection goes while the worker waits for the bank; its next statement (completing) fails
    assert len(terminate_database_connections_of(child)) == 1

    # then: the task retries on a new connection, resumes the reserved order and completes it
    wait_for_orders([order.pk], timeout=60)
    assert_completed_exactly_once(faults, [order])
    assert "Retry in" in worker.log()
    order.refresh_from_db()
    assert order.attempts == 2
    # Nothing half-written: stock taken once, one timeline, one confirmation and one completed event in the outbox.
    product.refresh_from_db()
    assert product.stock == 7
    assert list(OrderEvent.objects.filter(order=order).order_by("id").values_list("status", flat=True)) == [
        "pending",
        "processing",
        "completed",
    ]
    outbox = OutboxMessage.objects.filter(payload__order_id=str(order.pk)).values_list("name", flat=True)
    assert sorted(outbox) == [
        "notification_sent",
        "notifications.send_notification",
        "order_completed",
        "order_placed",
        "orders.process_order",
    ]
