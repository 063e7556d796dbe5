"""The ops commands against the real database, Redis and (for queue_stats) a real worker."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.utils import timezone
from django_celery_results.models import TaskResult

from analytics.models import Event
from core.cli import parse_since
from jobs.models import DeadLetter, OutboxMessage, TaskDelivery
from orders.models import Order
from orders.tasks import process_order_task
from proj.celery import app as celery_app
from tests.ops.helpers import make_order

pytestmark = pytest.mark.django_db

Status = Order.Status
COMMANDS = {
    "queue_stats": "jobs",
    "replay_dead_letters": "jobs",
    "prune": "jobs",
    "retry_failed": "orders",
    "analytics_report": "analytics",
}


def run(*arguments: str) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command(*arguments, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


@pytest.mark.parametrize(("name", "app"), COMMANDS.items())
def test_every_command_explains_itself(name, app):
    help_text = load_command_class(app, name).create_parser("manage.py", name).format_help()

    assert help_text.startswith(f"usage: manage.py {name}")
    # argparse wraps lines (at spaces and hyphens): compare without whitespace.
    assert "".join(load_command_class(app, name).help.split()) in "".join(help_text.split())


def test_queue_stats_counts_queues_outbox_dead_letters_and_workers(celery_worker):
    # Wait for the worker's answer (a loaded machine can take longer than the default second), so that it has
    # stopped consuming before the messages are published.
    replies = celery_app.control.cancel_consumer(
        "cloud.eu", destination=[celery_worker.hostname], reply=True, timeout=30
    )
    assert replies == [{celery_worker.hostname: {"ok": "no longer consuming from cloud.eu"}}]
    for _ in range(3):
        process_order_task.apply_async(kwargs={"order_id": "x", "region": "eu"}, priority=9)
    OutboxMessage.objects.create(kind="event", name="order_placed")
    DeadLetter.objects.create(task_id="t-1", task_name="orders.process_order", reason="gave up")

    stdout, _ = run("queue_stats", "--json")

    report = json.loads(stdout)
    assert report["queues"] == {
        "cloud.eu": 3,
        "cloud.us": 0,
        "cloud.ap": 0,
        "public_fallback": 0,
        "analytics": 0,
        "maintenance": 0,
        "heavy": 0,
    }
    assert report["outbox"]["event"]["unsent"] == 1
    assert report["outbox"]["task"] == {"unsent": 0, "oldest_age_seconds": 0.0}
    assert report["dead_letters"] == {"pending": 1, "replayed": 0}
    assert report["workers"] == [celery_worker.hostname]


def test_queue_stats_says_when_the_broker_is_unreachable(monkeypatch):
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:9/0")
    monkeypatch.setattr(celery_app, "_pool", None)

    with pytest.raises(CommandError, match=r"^The broker \(REDIS_URL / CELERY_BROKER_URL\) is not reachable: "):
        run("queue_stats")


def test_retry_failed_since_a_moment_with_a_dry_run_first(django_capture_on_commit_callbacks):
    recent = make_order(status=Status.FAILED, seconds_to_final=3000, failure_reason="Processing gave up")
    make_order(status=Status.FAILED, seconds_to_final=60, failure_reason="Out of stock: MUG-001")  # 59 min ago
    make_order(status=Status.COMPLETED, seconds_to_final=3000)

    dry_stdout, _ = run("retry_failed", "--since", "30m", "--dry-run")
    assert Order.objects.filter(status=Status.FAILED).count() == 2
    with django_capture_on_commit_callbacks(execute=False):
        stdout, stderr = run("retry_failed", "--since", "30m")

    assert dry_stdout.splitlines() == [
        f"would retry {recent.pk}: Processing gave up",
        "Dry run: 1 order(s) would be retried.",
    ]
    assert stdout.splitlines() == ["retried 1/1", "Retried 1 order(s); skipped 0."]
    assert stderr == ""
    assert list(Order.objects.filter(status=Status.PENDING).values_list("pk", flat=True)) == [recent.pk]
    assert OutboxMessage.objects.get(name="orders.process_order").payload == {
        "order_id": str(recent.pk),
        "region": "eu",
    }


def test_retry_failed_refuses_a_moment_it_cannot_read():
    with pytest.raises(CommandError, match=r"^--since 'yesterday' is not a moment: 30m, 6h or 7d ago, or an ISO"):
        run("retry_failed", "--since", "yesterday")


def test_parse_since_reads_durations_dates_and_date_times():
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    assert parse_since("90m", now=now) == datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
    assert parse_since("2d", now=now) == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_since("2026-11-20") == datetime(2026, 11, 20, tzinfo=UTC)
    assert parse_since("2026-11-20T08:15") == datetime(2026, 11, 20, 8, 15, tzinfo=UTC)
    assert parse_since("2026-11-20T08:15+01:00") == datetime(2026, 11, 20, 7, 15, tzinfo=UTC)


def test_replay_dead_letters_of_one_task(django_capture_on_commit_callbacks):
    order = make_order(status=Status.FAILED, seconds_to_final=5)
    DeadLetter.objects.create(
        task_id="t-1", task_name="orders.process_order", kwargs={"order_id": str(order.pk)}, reason="gave up"
    )
    DeadLetter.objects.create(task_id="t-2", task_name="analytics.track_events", kwargs={"events": []}, reason="bug")

    dry_stdout, _ = run("replay_dead_letters", "--task", "orders.process_order", "--dry-run")
    with django_capture_on_commit_callbacks(execute=False):
        stdout, _ = run("replay_dead_letters", "--task", "orders.process_order")
    again, _ = run("replay_dead_letters", "--task", "orders.process_order")

    assert dry_stdout.splitlines()[-1] == "Dry run: 1 dead letter(s) would be replayed."
    assert stdout.splitlines() == ["replayed 1/1", "Replayed 1 dead letter(s); skipped 0."]
    assert again == "No dead letters to replay.\n"
    order.refresh_from_db()
    assert order.status == Status.PENDING
    assert set(DeadLetter.objects.filter(replayed_at__isnull=True).values_list("task_id", flat=True)) == {"t-2"}


def test_prune_deletes_history_older_than_the_retention_in_batches(settings):
    settings.PRUNE_BATCH_SIZE = 2
    old = timezone.now() - timedelta(days=31)
    recent = timezone.now() - timedelta(days=29)
    for index in range(5):
        TaskResult.objects.create(task_id=f"old-{index}", status="SUCCESS")
    TaskResult.objects.create(task_id="recent", status="SUCCESS")
    # date_done is auto_now: set it after creating.
    TaskResult.objects.filter(task_id__startswith="old-").update(date_done=old)
    TaskResult.objects.filter(task_id="recent").update(date_done=recent)
    OutboxMessage.objects.create(kind="task", name="orders.process_order", sent_at=old)
    kept_unsent = OutboxMessage.objects.create(kind="task", name="orders.process_order")
    OutboxMessage.objects.filter(pk=kept_unsent.pk).update(created_at=old)
    kept_sent = OutboxMessage.objects.create(kind="event", name="order_placed", sent_at=recent)
    TaskDelivery.objects.create(task_id="old", task_name="x", deliveries=2)
    TaskDelivery.objects.filter(task_id="old").update(last_delivered_at=old)
    TaskDelivery.objects.create(task_id="recent", task_name="x", deliveries=2)

    stdout, _ = run("prune", "--days", "30")

    lines = stdout.splitlines()
    assert lines[0].startswith("Pruning history older than 30 days (before ")
    assert [line.split(" in ")[0] for line in lines[1:4]] == [
        "  task results: 5 deleted",
        "  sent outbox messages: 1 deleted",
        "  task deliveries: 1 deleted",
    ]
    assert lines[4] == "Pruned 7 rows."
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["recent"]
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {kept_unsent.pk, kept_sent.pk}
    assert list(TaskDelivery.objects.values_list("task_id", flat=True)) == ["recent"]


def test_prune_refuses_to_delete_todays_history():
    with pytest.raises(CommandError, match="--days must be at least 1"):
        run("prune", "--days", "0")


def record_event(event_type: str, *, day: datetime, total: str, currency: str = "EUR") -> None:
    Event.objects.create(
        event_id=uuid.uuid4(),
        event_type=event_type,
        order_id=uuid.uuid4(),
        data={"total": total, "currency": currency},
        occurred_at=day,
    )


def test_analytics_report_counts_orders_and_revenue_per_day_and_status():
    today = timezone.now().replace(hour=10, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    record_event("order_placed", day=yesterday, total="10.00")
    record_event("order_placed", day=yesterday, total="15.50")
    record_event("order_completed", day=yesterday, total="10.00")
    record_event("order_failed", day=yesterday, total="15.50")
    record_event("order_placed", day=today, total="8.75")
    record_event("order_placed", day=today, total="20.00", currency="USD")
    record_event("notification_sent", day=today, total="0")
    record_event("order_placed", day=today - timedelta(days=9), total="99.00")

    stdout, _ = run("analytics_report", "--days", "7", "--format", "csv")

    assert stdout.splitlines() == [
        "day,status,currency,orders,revenue",
        f"{yesterday:%Y-%m-%d},placed,EUR,2,25.50",
        f"{yesterday:%Y-%m-%d},completed,EUR,1,10.00",
        f"{yesterday:%Y-%m-%d},failed,EUR,1,15.50",
        f"{today:%Y-%m-%d},placed,EUR,1,8.75",
        f"{today:%Y-%m-%d},placed,USD,1,20.00",
    ]
    table, _ = run("analytics_report", "--days", "1")
    assert table.splitlines()[1:] == [
        f"{today:%Y-%m-%d}  placed     EUR             1          8.75",
        f"{today:%Y-%m-%d}  placed     USD             1         20.00",
    ]
