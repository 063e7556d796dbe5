"""Beat's schedule lives in the database (django-celery-beat), seeded from CELERY_BEAT_SCHEDULE."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler
from django_celery_results.models import TaskResult

from jobs.tasks import prune_history_task
from proj.celery import app as celery_app

# The scheduler closes database connections between ticks, as in beat: no test transaction can span it.
pytestmark = pytest.mark.django_db(transaction=True)


def test_the_database_scheduler_installs_relay_reconciliation_and_pruning():
    assert not PeriodicTask.objects.exists()

    DatabaseScheduler(app=celery_app)

    tasks = {task.name: task for task in PeriodicTask.objects.select_related("interval", "crontab")}
    assert sorted(tasks) == [
        "prune-history",
        "prune-idempotency-keys",
        "reconcile-notifications",
        "reconcile-stuck-orders",
        "relay-outbox",
    ]
    relay, reconcile, prune = tasks["relay-outbox"], tasks["reconcile-stuck-orders"], tasks["prune-history"]
    assert (relay.task, relay.interval.every, relay.interval.period) == ("jobs.relay_outbox", 2, "seconds")
    assert (reconcile.task, reconcile.interval.every) == ("orders.reconcile_stuck_orders", 60)
    assert prune.task == "jobs.prune_history"
    assert (prune.crontab.minute, prune.crontab.hour, prune.crontab.day_of_week) == ("30", "3", "*")
    assert [json.loads(task.kwargs) for task in (relay, reconcile, prune)] == [{}, {}, {}]
    assert (relay.expire_seconds, reconcile.expire_seconds, prune.expire_seconds) == (60, 300, 300)
    keys = tasks["prune-idempotency-keys"]
    assert (keys.task, keys.interval.every, keys.interval.period, keys.expire_seconds) == (
        "orders.prune_idempotency_keys",
        3600,
        "seconds",
        300,
    )
    notifications = tasks["reconcile-notifications"]
    assert (notifications.task, notifications.interval.every, notifications.expire_seconds) == (
        "orders.reconcile_notifications",
        300,
        300,
    )
    assert all(task.enabled for task in tasks.values())


def test_the_daily_prune_task_keeps_the_configured_retention(settings):
    settings.PRUNE_RETENTION_DAYS = 7
    TaskResult.objects.create(task_id="old", status="FAILURE")
    TaskResult.objects.create(task_id="recent", status="FAILURE")
    TaskResult.objects.filter(task_id="old").update(date_done=timezone.now() - timedelta(days=8))
    TaskResult.objects.filter(task_id="recent").update(date_done=timezone.now() - timedelta(days=6))

    report = prune_history_task()

    assert report == {"task results": 1, "sent outbox messages": 0, "task deliveries": 0}
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["recent"]
