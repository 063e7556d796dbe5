"""Placing, following and cancelling orders through the API."""

import uuid

import pytest
from django.core.serializers.json import DjangoJSONEncoder

from jobs.models import OutboxMessage
from orders import services
from orders.models import Order
from orders.services import RequestedItem
from tests.api.conftest import ORDER, post_json

pytestmark = pytest.mark.django_db


def as_json(moment) -> str:
    """A datetime as the API writes it."""
    return DjangoJSONEncoder().default(moment)


def place(email="ada@example.com", payment_token="tok_visa") -> Order:
    return services.place_order(
        email=email, region="eu", items=[RequestedItem("MUG-001", 2)], payment_token=payment_token
    ).order


def test_placing_an_order_answers_201_with_the_order_and_schedules_its_processing_after_commit(
    client, catalog, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_json(client, "/api/orders", ORDER)

    assert response.status_code == 201
    order = Order.objects.get()
    pending = order.events.get()
    assert response.json() == {
        "id": str(order.id),
        "status": "pending",
        "total": "49.00",
        "currency": "EUR",
        "items": [
            {"sku": "MUG-001", "name": "Stoneware mug", "quantity": 2, "unit_price": "12.50"},
            {"sku": "TEE-001", "name": "Organic cotton T-shirt", "quantity": 1, "unit_price": "24.00"},
        ],
        "created_at": as_json(order.created_at),
        "status_url": f"http://testserver/api/orders/{order.id}",
        "timeline": [{"status": "pending", "at": as_json(pending.created_at), "note": ""}],
        "failure_reason": None,
        "processed_in": None,
    }
    assert (order.email, order.region, order.payment_token, order.push_topic) == (
        "ada@example.com",
        "eu",
        "tok_visa",
        "",
    )
    assert OutboxMessage.objects.get(name="orders.process_order").payload == {"order_id": str(order.id), "region": "eu"}
    assert len(callbacks) == 1  # the publish, which runs only once the order is committed


def test_the_placement_answers_with_the_order_as_following_it_shows_without_reading_it_back(
    client, catalog, django_assert_num_queries
):
    # when: placed in 12 statements (2 savepoints and their releases, the key's lock and lookup, the products, the
    # order, its items, its timeline, the outbox, the key), none of which reads the order back
    with django_assert_num_queries(12):
        placed = post_json(client, "/api/orders", {**ORDER, "items": ORDER["items"][::-1]}, **{"Idempotency-Key": "k1"})

    # then: the answer is the order as GET shows it, items by SKU
    assert placed.json() == client.get(placed.json()["status_url"]).json()


def test_an_order_can_ask_for_a_push_notification(client, catalog):
    response = post_json(client, "/api/orders", {**ORDER, "push_topic": "ada-orders"})

    assert response.status_code == 201
    assert Order.objects.get().push_topic == "ada-orders"


def test_following_an_order_shows_its_timeline_and_why_it_failed(client, catalog, sandbox):
    order = place(payment_token="tok_chargeDeclined")
    services.process_order(order_id=str(order.id))

    response = client.get(f"/api/orders/{order.id}")

    assert response.status_code == 200
    order.refresh_from_db()
    pending, processing, failed = order.events.all()
    assert response.json() == {
        "id": str(order.id),
        "status": "failed",
        "total": "25.00",
        "currency": "EUR",
        "items": [{"sku": "MUG-001", "name": "Stoneware mug", "quantity": 2, "unit_price": "12.50"}],
        "created_at": as_json(order.created_at),
        "status_url": f"http://testserver/api/orders/{order.id}",
        "timeline": [
            {"status": "pending", "at": as_json(pending.created_at), "note": ""},
            {"status": "processing", "at": as_json(processing.created_at), "note": ""},
            {
                "status": "failed",
                "at": as_json(failed.created_at),
                "note": "Payment declined: Your card was declined.",
            },
        ],
        "failure_reason": "Payment declined: Your card was declined.",
        "processed_in": None,
    }


def test_following_a_completed_order(client, catalog, sandbox):
    order = place()
    services.process_order(order_id=str(order.id), processor=services.Processor(worker="eu-1@pod", region="eu"))

    body = client.get(f"/api/orders/{order.id}").json()

    assert body["status"] == "completed"
    assert [change["status"] for change in body["timeline"]] == ["pending", "processing", "completed"]
    assert body["failure_reason"] is None
    # Where it was processed; the timeline records the worker, for the admin (not for the customer).
    assert body["processed_in"] == "eu"
    assert list(order.events.values_list("worker", flat=True)) == ["", "eu-1@pod", "eu-1@pod"]


def test_an_unknown_order_is_404(client):
    order_id = uuid.uuid4()

    response = client.get(f"/api/orders/{order_id}")

    assert response.status_code == 404
    assert response.json() == {"error": {"code": "order_not_found", "message": f"Order {order_id} does not exist."}}


@pytest.mark.parametrize("order_id", ["42", "not-a-uuid", "8e03978e-40d5-43e8-bc93-6894a57f932", "%00"])
def test_an_order_id_that_is_not_a_uuid_is_404(client, order_id):
    response = client.get(f"/api/orders/{order_id}")

    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "No API endpoint at this URL."}}


def test_no_endpoint_lists_orders(client, catalog):
    place()

    response = client.get("/api/orders")

    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_cancelling_a_pending_order(client, catalog):
    order = place()

    response = client.post(f"/api/orders/{order.id}/cancel", content_type="application/json")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled"
    assert [(change["status"], change["note"]) for change in body["timeline"]] == [
        ("pending", ""),
        ("cancelled", "Cancelled by the customer."),
    ]
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert OutboxMessage.objects.filter(name="order_cancelled").get().payload["order_id"] == str(order.id)


def test_cancelling_an_order_past_pending_is_409_with_its_status(client, catalog, sandbox):
    order = place()
    services.process_order(order_id=str(order.id))

    response = client.post(f"/api/orders/{order.id}/cancel", content_type="application/json")

    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": "order_not_cancellable",
            "message": "Only a pending order can be cancelled; this one is completed.",
            "details": {"status": "completed"},
        }
    }
    order.refresh_from_db()
    assert order.status == Order.Status.COMPLETED


def test_cancelling_an_unknown_order_is_404(client):
    order_id = uuid.uuid4()

    response = client.post(f"/api/orders/{order_id}/cancel", content_type="application/json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "order_not_found"
