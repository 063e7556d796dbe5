"""`/metrics` on the web app: the pipeline's state read from PostgreSQL and Redis at scrape time."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from jobs import dead_letters, outbox
from jobs.models import DeadLetter, OutboxMessage
from orders.models import Order
from orders.tasks import process_order_task
from proj.celery import app as celery_app
from tests.ops.helpers import check_with_promtool, make_order, parse_metrics

pytestmark = pytest.mark.django_db

Status = Order.Status


@pytest.fixture
def pipeline(django_capture_on_commit_callbacks):
    """Orders in every status, messages in the queues (one with a priority), an outbox backlog, dead letters."""
    make_order(status=Status.PENDING)
    make_order(status=Status.PENDING)
    make_order(status=Status.PROCESSING)
    make_order(status=Status.COMPLETED, seconds_to_final=0.4)
    make_order(status=Status.COMPLETED, seconds_to_final=3)
    make_order(status=Status.COMPLETED, seconds_to_final=45)
    make_order(status=Status.FAILED, seconds_to_final=700)
    make_order(status=Status.CANCELLED, seconds_to_final=20)

    process_order_task.apply_async(kwargs={"order_id": "a", "region": "eu"})
    # Redis keeps priority messages in sub-queues (`cloud.eu\x06\x166`): they wait all the same.
    process_order_task.apply_async(kwargs={"order_id": "b", "region": "eu"}, priority=6)
    # A US order's notification, with no US worker alive: the public pool's queue.
    celery_app.send_task("notifications.send_notification", kwargs={"region": "us"})

    with django_capture_on_commit_callbacks(execute=False), transaction.atomic():
        outbox.publish_on_commit(outbox.task_message(process_order_task, order_id="c", region="eu"))  # never published
        outbox.publish_on_commit(outbox.event_message("order_placed", order_id="c"))
    OutboxMessage.objects.filter(kind="task").update(created_at=timezone.now() - timedelta(minutes=10))
    OutboxMessage.objects.create(kind="task", name="orders.process_order", sent_at=timezone.now())

    for index in range(3):
        dead_letters.record_dead_letter(
            task_id=f"t-{index}", task_name="orders.process_order", args=[], kwargs={}, reason="x", attempts=9
        )
    DeadLetter.objects.filter(task_id="t-0").update(replayed_at=timezone.now())


def test_metrics_report_queues_outbox_dead_letters_and_orders(client, pipeline):
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = parse_metrics(response.content.decode())
    assert {labels: value for (name, labels), value in samples.items() if name == "celery_queue_length"} == {
        (("queue_name", "cloud.eu"),): 2,
        (("queue_name", "cloud.us"),): 0,
        (("queue_name", "cloud.ap"),): 0,
        (("queue_name", "public_fallback"),): 1,
        (("queue_name", "analytics"),): 0,
        (("queue_name", "maintenance"),): 0,
        (("queue_name", "heavy"),): 0,
    }
    assert samples[("shop_outbox_unsent_messages", (("kind", "task"),))] == 1
    assert samples[("shop_outbox_unsent_messages", (("kind", "event"),))] == 1
    assert 600 <= samples[("shop_outbox_oldest_unsent_age_seconds", (("kind", "task"),))] < 900
    assert samples[("shop_dead_letters", (("state", "pending"),))] == 2
    assert samples[("shop_dead_letters", (("state", "replayed"),))] == 1
    assert {labels[0][1]: value for (name, labels), value in samples.items() if name == "shop_orders"} == {
        "pending": 2,
        "processing": 1,
        "completed": 3,
        "failed": 1,
        "cancelled": 1,
    }
    assert samples[("shop_metrics_source_up", (("source", "redis"),))] == 1
    assert samples[("shop_metrics_source_up", (("source", "database"),))] == 1


def test_the_latency_histogram_counts_each_final_order_in_its_buckets(client, pipeline):
    samples = parse_metrics(client.get("/metrics").content.decode())

    def buckets(status: str) -> dict[str, float]:
        return {
            dict(labels)["le"]: value
            for (name, labels), value in samples.items()
            if name == "shop_order_placement_to_final_seconds_bucket" and dict(labels)["status"] == status
        }

    assert buckets("completed") == {
        "0.5": 1, "1.0": 1, "2.0": 1, "5.0": 2, "10.0": 2, "30.0": 2, "60.0": 3, "120.0": 3, "300.0": 3,
        "900.0": 3, "3600.0": 3, "+Inf": 3,
    }  # fmt: skip
    assert buckets("failed")["300.0"] == 0
    assert buckets("failed")["900.0"] == 1
    assert buckets("cancelled")["10.0"] == 0
    assert buckets("cancelled")["30.0"] == 1
    completed = (("status", "completed"),)
    assert samples[("shop_order_placement_to_final_seconds_count", completed)] == 3
    assert samples[("shop_order_placement_to_final_seconds_sum", completed)] == pytest.approx(48.4)


def test_promtool_accepts_the_metrics(client, pipeline):
    result = check_with_promtool(client.get("/metrics").content.decode())

    # The one lint complaint is celery-exporter's own name, kept so its dashboards and alerts work unchanged; exit
    # code 3 is promtool's for lint findings only (a metric it cannot parse is 1).
    assert (result.returncode, result.stdout, result.stderr) == (3, "", PROMTOOL_ACCEPTED_LINT)


PROMTOOL_ACCEPTED_LINT = (
    'celery_active_worker_count non-histogram and non-summary metrics should not have "_count" suffix\n'
)


def test_an_unreachable_broker_drops_the_queue_metric_and_says_so(client, pipeline, monkeypatch):
    # A pool of connections to a port where nothing listens: the scrape must answer anyway.
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:9/0")
    monkeypatch.setattr(celery_app, "_pool", None)

    response = client.get("/metrics")

    assert response.status_code == 200
    samples = parse_metrics(response.content.decode())
    assert samples[("shop_metrics_source_up", (("source", "redis"),))] == 0
    assert not [name for name, _labels in samples if name == "celery_queue_length"]
    assert samples[("shop_orders", (("status", "pending"),))] == 2


def test_metrics_report_the_events_each_consumer_has_not_confirmed(
    client, settings, django_capture_on_commit_callbacks
):
    # given: analytics and the export; two events sent to both, one confirmed by analytics only, one not sent yet
    settings.OUTBOX_EVENT_CONSUMERS = ["analytics.track_events", "exports.export_events"]
    with django_capture_on_commit_callbacks(execute=False), transaction.atomic():
        first, second = outbox.publish_on_commit(
            outbox.event_message("order_placed", order_id="c"), outbox.event_message("order_completed", order_id="c")
        )
    outbox.relay_outbox()
    outbox.confirm_events(consumer="analytics.track_events", event_ids=[str(first.id), str(second.id)])
    OutboxMessage.objects.update(created_at=timezone.now() - timedelta(minutes=10))
    with django_capture_on_commit_callbacks(execute=False), transaction.atomic():
        outbox.publish_on_commit(outbox.event_message("order_failed", order_id="d"))

    response = client.get("/metrics")

    samples = parse_metrics(response.content.decode())
    unconfirmed = {dict(labels)["consumer"]: value for (name, labels), value in samples.items()
                   if name == "shop_outbox_unconfirmed_events"}  # fmt: skip
    assert unconfirmed == {"analytics.track_events": 1, "exports.export_events": 3}
    oldest = {dict(labels)["consumer"]: value for (name, labels), value in samples.items()
              if name == "shop_outbox_oldest_unconfirmed_event_age_seconds"}  # fmt: skip
    assert oldest["analytics.track_events"] < 60
    assert 600 <= oldest["exports.export_events"] < 660
    result = check_with_promtool(response.content.decode())
    assert (result.returncode, result.stdout, result.stderr) == (3, "", PROMTOOL_ACCEPTED_LINT)
