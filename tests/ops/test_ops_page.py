"""The staff-only ops page and its data: the `/metrics` numbers, plus per-minute history from the timelines."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import DeadLetter
from orders.models import Order, OrderEvent
from orders.tasks import process_order_task
from tests.ops.helpers import make_order, parse_metrics

pytestmark = pytest.mark.django_db

Status = Order.Status


@pytest.mark.parametrize("url", ["/ops/", "/ops/data"])
def test_the_ops_page_is_for_staff_only(client, django_user_model, url):
    assert client.get(url)["Location"].startswith("/admin/login/")
    client.force_login(django_user_model.objects.create_user(username="customer", password="x"))
    assert client.get(url)["Location"].startswith("/admin/login/")


def test_the_ops_page_loads_nothing_from_elsewhere(admin_client, client):
    response = admin_client.get("/ops/")

    assert response.status_code == 200
    content = response.content.decode()
    # Its script and styles are the app's own static files, as the storefront's: no CDN, no other host.
    assert re.findall(r'(?:src|href)="(/static/[^"]+|https?://[^"]+)"', content) == [
        "/static/ops/ops.css",
        "/static/ops/ops.js",
    ]
    script = b"".join(client.get("/static/ops/ops.js").streaming_content).decode()
    assert "function drawChart(svg, legend" in script  # the charts are drawn by that script
    assert 'data-url="/ops/data"' in content


def test_ops_data_shows_the_numbers_of_metrics(admin_client, client):
    make_order(status=Status.PENDING)
    make_order(status=Status.COMPLETED, seconds_to_final=2)
    DeadLetter.objects.create(task_id="t-1", task_name="orders.process_order", reason="gave up")
    process_order_task.apply_async(kwargs={"order_id": "x", "region": "eu"})

    data = admin_client.get("/ops/data").json()
    samples = parse_metrics(client.get("/metrics").content.decode())

    assert data["orders_by_status"] == {
        status: samples[("shop_orders", (("status", status),))] for status in Order.Status.values
    }
    assert data["queue_lengths"] == {
        "cloud.eu": 1,
        "cloud.us": 0,
        "cloud.ap": 0,
        "public_fallback": 0,
        "analytics": 0,
        "maintenance": 0,
        "heavy": 0,
    }
    assert data["dead_letters"] == {"pending": 1, "replayed": 0}
    assert data["sources_up"] == {"redis": True, "database": True}
    assert data["outbox"] == {
        "task": {"unsent": 0, "oldest_age_seconds": 0.0},
        "event": {"unsent": 0, "oldest_age_seconds": 0.0},
    }


def test_ops_data_counts_orders_per_minute_and_latency_percentiles(admin_client):
    minute = (timezone.now() - timedelta(minutes=5)).replace(second=0, microsecond=0)
    for seconds in (10, 20, 30):
        order = make_order(status=Status.COMPLETED, seconds_to_final=seconds)
        Order.objects.filter(pk=order.pk).update(created_at=minute - timedelta(seconds=seconds), updated_at=minute)
        OrderEvent.objects.filter(order=order, status=Status.PENDING).update(created_at=minute - timedelta(minutes=1))
        OrderEvent.objects.filter(order=order, status=Status.COMPLETED).update(created_at=minute + timedelta(seconds=1))
    old = make_order(status=Status.FAILED, seconds_to_final=5)
    OrderEvent.objects.filter(order=old).update(created_at=minute - timedelta(hours=2))

    data = admin_client.get("/ops/data").json()

    before = (minute - timedelta(minutes=1)).isoformat()
    assert data["orders_per_minute"] == [
        {"minute": before, "status": "pending", "count": 3},
        {"minute": minute.isoformat(), "status": "completed", "count": 3},
    ]
    assert data["latency_percentiles"]["percentiles"] == [0.5, 0.9, 0.99]
    [row] = data["latency_percentiles"]["minutes"]
    assert row["minute"] == minute.isoformat()
    assert row["seconds"] == pytest.approx([20.0, 28.0, 29.8])
