"""The whole pipeline on real PostgreSQL, real Redis and a real Celery worker consuming real messages."""

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from celery.result import AsyncResult
from django.conf import settings
from django.core import mail
from django_celery_results.models import TaskResult

from analytics.models import Event
from analytics.tasks import track_events_task
from jobs.models import DeadLetter, OutboxMessage
from jobs.outbox import relay_outbox
from notifications.models import Notification
from orders.models import Order, Product
from orders.services import RequestedItem, place_order
from orders.tasks import process_order_task
from tests.factories import ProductFactory
from tests.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

Status = Order.Status


def finished(count: int) -> bool:
    return Order.objects.filter(status__in=Order.FINAL_STATUSES).count() == count


def relay_events_until(predicate, *, timeout: float) -> None:
    """Do beat's job: run the relay until `predicate` holds."""
    wait_for(lambda: relay_outbox() and predicate(), timeout=timeout, interval=0.2, message="relayed events")


def test_two_hundred_orders_complete_each_with_one_email_and_one_event(celery_worker, sandbox):
    # given
    ProductFactory(sku="MUG-001", stock=1000)
    ProductFactory(sku="TEE-001", stock=1000)

    # when
    orders = [
        place_order(
            email=f"customer{index}@example.com",
            region="eu",
            payment_token="tok_visa",
            items=[RequestedItem("MUG-001", 1), RequestedItem("TEE-001", 2)],
        ).order
        for index in range(200)
    ]
    wait_for(lambda: finished(200), timeout=120, message="200 orders to finish")
    relay_events_until(lambda: Event.objects.filter(event_type="notification_sent").count() == 200, timeout=60)

    # then
    assert Counter(Order.objects.values_list("status", flat=True)) == {Status.COMPLETED: 200}
    assert Product.objects.get(sku="MUG-001").stock == 800
    assert Product.objects.get(sku="TEE-001").stock == 600
    wait_for(lambda: len(mail.outbox) >= 200, timeout=30, message="200 emails")
    assert sorted(email.to[0] for email in mail.outbox) == sorted(order.email for order in orders)
    assert Notification.objects.filter(status="sent").count() == 200
    completed_events = Event.objects.filter(event_type="order_completed")
    assert sorted(str(order_id) for order_id in completed_events.values_list("order_id", flat=True)) == sorted(
        str(order.id) for order in orders
    )
    assert Event.objects.filter(event_type="order_placed").count() == 200
    assert len(sandbox.redis.keys("sandbox:charge:*")) == 200
    assert not DeadLetter.objects.exists()


def test_exhausted_retries_fail_the_order_and_keep_a_dead_letter(celery_worker, settings, monkeypatch):
    # given: a bank that never answers, and a task allowed two retries
    settings.PAYMENT_SANDBOX_TIMEOUTS_BEFORE_SUCCESS = 1000
    monkeypatch.setattr(process_order_task, "max_retries", 2)
    ProductFactory(sku="MUG-001", stock=10)

    # when
    order = place_order(
        email="ada@example.com", region="eu", items=[RequestedItem("MUG-001", 2)], payment_token="tok_timeout"
    ).order
    wait_for(lambda: finished(1), timeout=60, message="the order to fail")

    # then
    order.refresh_from_db()
    assert order.status == Status.FAILED
    assert order.failure_reason == (
        "Processing gave up: PaymentGatewayUnavailable: The payment provider timed out (sandbox tok_timeout)."
    )
    assert order.attempts == 3
    assert Product.objects.get(sku="MUG-001").stock == 10
    dead_letter = DeadLetter.objects.get()
    assert dead_letter.task_name == "orders.process_order"
    assert dead_letter.kwargs == {"order_id": str(order.id), "region": "eu"}
    assert dead_letter.attempts == 3
    assert dead_letter.reason == "PaymentGatewayUnavailable: The payment provider timed out (sandbox tok_timeout)."
    wait_for(
        lambda: Notification.objects.filter(kind="order_failed", status="sent").exists(),
        timeout=30,
        message="the failure email",
    )
    assert [email.subject for email in mail.outbox] == [f"We could not complete your order {order.id}"]


def test_an_order_whose_publish_died_with_its_process_is_delivered_by_the_relay(celery_worker, settings):
    # given: a process that commits an order and dies before its on-commit publish runs
    ProductFactory(sku="MUG-001", stock=10)
    settings.OUTBOX_RELAY_AFTER_SECONDS = 0
    script = (
        "import os, django; django.setup()\n"
        "from django.db import transaction\n"
        "from orders.services import RequestedItem, place_order\n"
        "with transaction.atomic():\n"
        "    transaction.on_commit(lambda: os._exit(0))  # registered first, so it runs before the publish\n"
        "    order = place_order(email='ada@example.com', region='eu', items=[RequestedItem('MUG-001', 1)],\n"
        "                        payment_token='tok_visa')\n"
    )
    environment = os.environ | {"DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url()}
    subprocess.run([sys.executable, "-c", script], env=environment, check=True, timeout=60)
    order = Order.objects.get()
    assert order.status == Status.PENDING
    assert OutboxMessage.objects.get(name="orders.process_order").sent_at is None

    # when
    report = relay_outbox()

    # then
    assert report.tasks_sent == 1
    wait_for(lambda: finished(1), timeout=60, message="the relayed order to finish")
    order.refresh_from_db()
    assert order.status == Status.COMPLETED


def test_failures_are_stored_in_postgresql_through_django_celery_results(celery_worker):
    # Successful results are not stored (CELERY_TASK_IGNORE_RESULT); errors are, with the task's arguments.
    ProductFactory(sku="MUG-001", stock=10)
    place_order(email="ada@example.com", region="eu", items=[RequestedItem("MUG-001", 1)], payment_token="tok_visa")
    succeeded_id = str(OutboxMessage.objects.get(name="orders.process_order").id)
    malformed = [{"event_id": "not-a-uuid"}]

    failed = track_events_task.delay(events=malformed)

    wait_for(lambda: AsyncResult(failed.id).state == "FAILURE", timeout=60, message="the failure to be stored")
    assert isinstance(AsyncResult(failed.id).result, KeyError)
    stored = TaskResult.objects.get(task_id=failed.id)
    assert (stored.status, stored.task_name) == ("FAILURE", "analytics.track_events")
    # result_extended: the name, arguments and worker are stored with the result (kwargs as Celery's repr, in JSON)
    assert json.loads(stored.task_kwargs) == repr({"events": malformed})
    assert "KeyError" in stored.traceback
    assert stored.worker
    assert stored.worker in celery_worker.hostname
    wait_for(lambda: finished(1), timeout=60, message="the order to finish")
    assert not TaskResult.objects.filter(task_id=succeeded_id).exists()


def database_url() -> str:
    database = settings.DATABASES["default"]
    return f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
