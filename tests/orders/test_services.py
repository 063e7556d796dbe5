import json
import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction

from core.errors import InvalidInput
from jobs.models import OutboxMessage
from orders import services
from orders.exceptions import OrderNotCancellable, OrderNotFound, OrderNotRetryable, UnknownProduct
from orders.models import Order, Product
from orders.payments import PaymentGatewayUnavailable
from orders.services import RequestedItem
from tests.conftest import queue_length, run_in_threads
from tests.factories import ProductFactory
from tests.helpers import sandbox_charge
from tests.orders.helpers import outbox, place, timeline

pytestmark = pytest.mark.django_db

Status = Order.Status


# --- place_order -------------------------------------------------------------------------------------------------


def test_place_order_prices_from_the_database(product):
    # given
    ProductFactory(sku="TEE-001", price=Decimal("24.99"))
    # when
    order = place(items=[RequestedItem("MUG-001", 3), RequestedItem("TEE-001", 1)])
    # then
    order.refresh_from_db()
    assert order.status == Status.PENDING
    assert order.total == Decimal("54.99")
    assert order.currency == "EUR"
    assert sorted(order.items.values_list("product__sku", "quantity", "unit_price")) == [
        ("MUG-001", 3, Decimal("10.00")),
        ("TEE-001", 1, Decimal("24.99")),
    ]
    assert timeline(order) == ["pending"]
    assert [message.payload for message in outbox("task", "orders.process_order")] == [
        {"order_id": str(order.id), "region": "eu"}
    ]
    assert [message.payload for message in outbox("event", "order_placed")] == [
        {"order_id": str(order.id), "region": "eu", "total": "54.99", "currency": "EUR"}
    ]


def test_place_order_merges_a_sku_listed_twice(product):
    order = place(items=[RequestedItem("MUG-001", 2), RequestedItem("MUG-001", 3)])

    assert list(order.items.values_list("quantity", flat=True)) == [5]
    assert order.total == Decimal("50.00")


def test_place_order_publishes_only_after_commit(product, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        order = place()
        assert queue_length("cloud.eu") == 0

    for callback in callbacks:
        callback()

    assert queue_length("cloud.eu") == 1
    [message] = outbox("task", "orders.process_order")
    assert message.sent_at is not None
    assert message.publish_attempts == 1
    assert message.payload == {"order_id": str(order.id), "region": "eu"}


def test_a_rolled_back_placement_schedules_nothing(product, django_capture_on_commit_callbacks):
    with (  # noqa: PT012 - the error must come from inside the transaction
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        place()
        raise RuntimeError("the surrounding work failed")

    assert callbacks == []
    assert Order.objects.count() == 0
    assert OutboxMessage.objects.count() == 0
    assert queue_length("cloud.eu") == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"region": "mars"}, "region"),
        ({"items": [RequestedItem("MUG-001", 0)]}, "items[0].quantity"),
        ({"items": [RequestedItem("MUG-001", 101)]}, "items[0].quantity"),
        ({"items": [RequestedItem("MUG-001", 60), RequestedItem("MUG-001", 41)]}, "items[1].quantity"),
        ({"items": [RequestedItem("MUG-001", True)]}, "items[0].quantity"),
        ({"items": [RequestedItem("", 1)]}, "items[0].sku"),
        ({"payment_token": ""}, "payment_token"),
        ({"push_topic": "no spaces allowed"}, "push_topic"),
    ],
)
def test_place_order_rejects_invalid_input_naming_the_field(product, overrides, field):
    arguments = {
        "email": "ada@example.com",
        "region": "eu",
        "items": [RequestedItem("MUG-001", 1)],
        "payment_token": "tok_visa",
    }

    with pytest.raises(InvalidInput) as raised:
        services.place_order(**(arguments | overrides))

    assert list(raised.value.fields) == [field]
    assert raised.value.status == 422
    assert Order.objects.count() == 0


def test_place_order_rejects_an_empty_order():
    with pytest.raises(InvalidInput) as raised:
        services.place_order(email="ada@example.com", region="eu", items=[], payment_token="tok_visa")

    assert raised.value.fields == {"items": "An order needs at least one item."}


def test_place_order_rejects_unknown_products(product):
    with pytest.raises(UnknownProduct) as raised:
        place(items=[RequestedItem("MUG-001", 1), RequestedItem("NOPE-1", 1)])

    assert raised.value.code == "unknown_product"
    assert raised.value.fields == {"items[1].sku": "Unknown product 'NOPE-1'."}
    assert OutboxMessage.objects.count() == 0


# --- process_order -----------------------------------------------------------------------------------------------


def test_process_order_reserves_stock_charges_and_completes(product, sandbox):
    order = place(items=[RequestedItem("MUG-001", 3)])

    result = services.process_order(order_id=str(order.id))

    order.refresh_from_db()
    assert result.status == order.status == Status.COMPLETED
    assert timeline(order) == ["pending", "processing", "completed"]
    assert order.attempts == 1
    assert Product.objects.get(sku="MUG-001").stock == 7
    charge = sandbox_charge(sandbox, f"order-{order.id}")
    assert charge["id"] == order.payment_reference
    assert charge["amount"] == "30.00"
    assert charge["outcome"] == "succeeded"
    [notification] = outbox("task", "notifications.send_notification")
    assert notification.payload == {
        "order_id": str(order.id),
        "channel": "email",
        "kind": "order_confirmation",
        "recipient": "ada@example.com",
        "context": {
            "order_id": str(order.id),
            "total": "30.00",
            "currency": "EUR",
            "items": [{"sku": "MUG-001", "name": "Mug", "quantity": 3}],
        },
        "region": "eu",
    }
    assert len(outbox("event", "order_completed")) == 1


def test_process_order_sends_a_push_too_when_the_customer_gave_a_topic(product):
    order = place(push_topic="ada-orders")

    services.process_order(order_id=str(order.id))

    channels = [
        (m.payload["channel"], m.payload["recipient"]) for m in outbox("task", "notifications.send_notification")
    ]
    assert channels == [("email", "ada@example.com"), ("push", "ada-orders")]


def test_processing_twice_has_the_effect_of_processing_once(product, sandbox):
    order = place(items=[RequestedItem("MUG-001", 3)])

    services.process_order(order_id=str(order.id))
    second = services.process_order(order_id=str(order.id))

    order.refresh_from_db()
    assert second is None
    assert timeline(order) == ["pending", "processing", "completed"]
    assert Product.objects.get(sku="MUG-001").stock == 7
    assert len(sandbox.redis.keys("sandbox:charge:*")) == 1
    assert len(outbox("task", "notifications.send_notification")) == 1
    assert len(outbox("event", "order_completed")) == 1


def test_a_declined_payment_fails_the_order_and_releases_its_stock(product, sandbox):
    order = place(items=[RequestedItem("MUG-001", 4)], token="tok_chargeDeclined")

    services.process_order(order_id=str(order.id))

    order.refresh_from_db()
    assert order.status == Status.FAILED
    assert order.failure_reason == "Payment declined: Your card was declined."
    assert timeline(order) == ["pending", "processing", "failed"]
    assert Product.objects.get(sku="MUG-001").stock == 10
    assert order.payment_reference == ""
    [notification] = outbox("task", "notifications.send_notification")
    assert notification.payload["kind"] == "order_failed"
    assert notification.payload["context"]["reason"] == "Payment declined: Your card was declined."
    [event] = outbox("event", "order_failed")
    assert event.payload["reason"] == "Payment declined: Your card was declined."


def test_a_timing_out_payment_retries_and_charges_once(product, sandbox, settings):
    settings.PAYMENT_SANDBOX_TIMEOUTS_BEFORE_SUCCESS = 2
    order = place(token="tok_timeout")

    for _ in range(2):
        with pytest.raises(PaymentGatewayUnavailable):
            services.process_order(order_id=str(order.id))
        order.refresh_from_db()
        assert order.status == Status.PROCESSING
    assert Product.objects.get(sku="MUG-001").stock == 8  # reserved once, kept while retrying
    services.process_order(order_id=str(order.id))

    order.refresh_from_db()
    assert order.status == Status.COMPLETED
    assert order.attempts == 3
    assert timeline(order) == ["pending", "processing", "completed"]
    assert Product.objects.get(sku="MUG-001").stock == 8
    assert len(sandbox.redis.keys("sandbox:charge:*")) == 1
    assert order.payment_reference == sandbox_charge(sandbox, f"order-{order.id}")["id"]


def test_an_order_for_more_than_the_stock_fails_without_touching_it(product):
    order = place(items=[RequestedItem("MUG-001", 11)])

    services.process_order(order_id=str(order.id))

    order.refresh_from_db()
    assert order.status == Status.FAILED
    assert order.failure_reason == "Out of stock: MUG-001"
    assert timeline(order) == ["pending", "processing", "failed"]
    assert Product.objects.get(sku="MUG-001").stock == 10


def test_one_short_product_takes_nothing_from_the_others(product):
    ProductFactory(sku="TEE-001", stock=1)
    order = place(items=[RequestedItem("MUG-001", 2), RequestedItem("TEE-001", 2)])

    services.process_order(order_id=str(order.id))

    order.refresh_from_db()
    assert order.failure_reason == "Out of stock: TEE-001"
    assert dict(Product.objects.values_list("sku", "stock")) == {"MUG-001": 10, "TEE-001": 1}


def test_processing_an_order_that_does_not_exist_says_so():
    with pytest.raises(OrderNotFound):
        services.process_order(order_id="0b6bd2b5-7c1a-4a5e-9d27-3f1c6f1d2c11")


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_orders_cannot_oversell_the_last_unit(sandbox, settings):
    # given: one unit left, two orders for it, processed at the same moment on two database connections
    settings.PAYMENT_SANDBOX_LATENCY_MS = 50
    ProductFactory(sku="LAST-1", stock=1)
    orders = [place(items=[RequestedItem("LAST-1", 1)]) for _ in range(2)]

    # when
    results = run_in_threads(2, lambda index: services.process_order(order_id=str(orders[index].id)))

    # then
    assert not [result for result in results if isinstance(result, Exception)]
    statuses = sorted(Order.objects.values_list("status", flat=True))
    assert statuses == [Status.COMPLETED, Status.FAILED]
    assert Order.objects.get(status=Status.FAILED).failure_reason == "Out of stock: LAST-1"
    assert Product.objects.get(sku="LAST-1").stock == 0
    assert len(sandbox.redis.keys("sandbox:charge:*")) == 1


@pytest.mark.django_db(transaction=True)
def test_reserving_stock_does_not_wait_for_an_order_being_placed_on_the_same_product(product, sandbox):
    # given: an order to process, and another order for the same product being placed: its items' foreign keys
    # are checked (KEY SHARE locks on the product) when it commits; here checked at once, and the commit held
    order = place()
    placed, release = threading.Event(), threading.Event()

    def place_and_hold() -> None:
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                place(email="grace@example.com")
                placed.set()
                release.wait(timeout=10)
        finally:
            connection.close()

    holder = threading.Thread(target=place_and_hold)
    holder.start()
    assert placed.wait(timeout=10)

    # when: the first order is processed meanwhile, giving up on any lock it would wait for
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        services.process_order(order_id=str(order.id))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
        release.set()
        holder.join(timeout=10)

    # then: it took the stock without waiting for the placement
    assert Order.objects.get(pk=order.pk).status == Status.COMPLETED
    assert Product.objects.get(sku="MUG-001").stock == 8


# --- cancel, fail, retry -----------------------------------------------------------------------------------------


def test_cancel_a_pending_order(product):
    order = place()

    services.cancel_order(order_id=str(order.id))
    result = services.process_order(order_id=str(order.id))

    order.refresh_from_db()
    assert result is None
    assert order.status == Status.CANCELLED
    assert timeline(order) == ["pending", "cancelled"]
    assert Product.objects.get(sku="MUG-001").stock == 10
    assert len(outbox("event", "order_cancelled")) == 1


def test_an_order_past_pending_cannot_be_cancelled(product):
    order = place()
    services.process_order(order_id=str(order.id))

    with pytest.raises(OrderNotCancellable) as raised:
        services.cancel_order(order_id=str(order.id))

    assert raised.value.status == 409
    assert raised.value.details == {"status": "completed"}


def test_cancelling_an_unknown_order_is_not_found():
    with pytest.raises(OrderNotFound):
        services.cancel_order(order_id="0b6bd2b5-7c1a-4a5e-9d27-3f1c6f1d2c11")


def test_failing_a_processing_order_releases_its_stock(product, settings):
    settings.PAYMENT_SANDBOX_TIMEOUTS_BEFORE_SUCCESS = 5
    order = place(token="tok_timeout", items=[RequestedItem("MUG-001", 4)])
    with pytest.raises(PaymentGatewayUnavailable):
        services.process_order(order_id=str(order.id))
    assert Product.objects.get(sku="MUG-001").stock == 6

    failed = services.fail_order(order_id=str(order.id), reason="Processing gave up: timeout")
    again = services.fail_order(order_id=str(order.id), reason="twice")

    assert failed.status == Status.FAILED
    assert again is None
    assert Product.objects.get(sku="MUG-001").stock == 10
    order.refresh_from_db()
    assert order.failure_reason == "Processing gave up: timeout"


def test_retrying_a_failed_order_reopens_and_schedules_it(product):
    order = place(items=[RequestedItem("MUG-001", 11)])
    services.process_order(order_id=str(order.id))
    Product.objects.filter(sku="MUG-001").update(stock=20)

    services.retry_order(order_id=str(order.id))
    services.process_order(order_id=str(order.id))

    order.refresh_from_db()
    assert order.status == Status.COMPLETED
    assert order.failure_reason == ""
    assert timeline(order) == ["pending", "processing", "failed", "pending", "processing", "completed"]
    assert len(outbox("task", "orders.process_order")) == 2


def test_only_failed_orders_can_be_retried(product):
    order = place()

    with pytest.raises(OrderNotRetryable):
        services.retry_order(order_id=str(order.id))


def test_a_resumed_order_is_charged_once(product, sandbox):
    # given: a worker reserved stock and was killed before charging (the order is left in processing)
    order = place()
    services._start_processing(str(order.id), services.NO_PROCESSOR)

    # when: the redelivered message runs twice
    services.process_order(order_id=str(order.id))
    services.process_order(order_id=str(order.id))

    # then
    order.refresh_from_db()
    assert order.status == Status.COMPLETED
    assert order.attempts == 2
    assert Product.objects.get(sku="MUG-001").stock == 8
    assert len(sandbox.redis.keys("sandbox:charge:*")) == 1
    assert json.loads(sandbox.redis.get(f"sandbox:charge:order-{order.id}"))["id"] == order.payment_reference
