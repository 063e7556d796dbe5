"""The Celery configuration says what the pipeline relies on; these tests keep it saying so."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from jobs import routing
from jobs.base import ReliableTask
from jobs.routing import UnroutableTask, route_task
from orders import tasks as order_tasks
from proj.celery import app

OUR_APPS = ("orders", "notifications", "analytics", "exports", "jobs")
ROOT = Path(__file__).resolve().parent.parent


def our_tasks() -> dict:
    app.loader.import_default_modules()
    return {name: task for name, task in app.tasks.items() if name.partition(".")[0] in OUR_APPS}


def test_the_app_reads_its_settings_from_django():
    assert app.main == "proj"
    assert app.conf.broker_url == settings.CELERY_BROKER_URL
    assert app.conf.result_backend == "django-db"


def test_reliability_settings():
    assert app.conf.task_serializer == app.conf.result_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss is True
    assert app.conf.broker_connection_retry_on_startup is True
    assert app.conf.result_extended is True
    assert app.conf.worker_send_task_events is True
    assert app.conf.task_send_sent_event is False
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit


def test_publishing_waits_less_for_redis_than_consuming():
    publishing = app.connection_for_write().transport_options
    consuming = app.connection_for_read().transport_options

    assert publishing["socket_timeout"] == publishing["socket_connect_timeout"] == 0.5
    assert (consuming["socket_timeout"], consuming["socket_connect_timeout"]) == (5.0, 2.0)
    assert (
        publishing["visibility_timeout"]
        == consuming["visibility_timeout"]
        == settings.BROKER_VISIBILITY_TIMEOUT_SECONDS
    )


def test_soft_shutdown_fits_inside_the_grace_period_of_whatever_stops_workers():
    # Kubernetes' default terminationGracePeriodSeconds; docker-compose.yml gives more (tests/test_project.py).
    assert 0 < app.conf.worker_soft_shutdown_timeout < 30
    assert app.conf.result_backend_always_retry is True


def test_broker_and_result_backend_share_the_visibility_timeout():
    assert app.conf.broker_transport_options["visibility_timeout"] == settings.BROKER_VISIBILITY_TIMEOUT_SECONDS
    assert app.conf.result_backend_transport_options["visibility_timeout"] == settings.BROKER_VISIBILITY_TIMEOUT_SECONDS


def test_every_task_has_a_stable_name_and_a_declared_queue():
    tasks = our_tasks()

    assert sorted(tasks) == [
        "analytics.track_events",
        "exports.export_events",
        "jobs.prune_history",
        "jobs.relay_outbox",
        "notifications.send_notification",
        "orders.make_thumbnail",
        "orders.process_order",
        "orders.prune_idempotency_keys",
        "orders.reconcile_notifications",
        "orders.reconcile_stuck_orders",
    ]
    for name in tasks:
        route = route_task(name, (), {"region": "eu"}, {})
        assert route["queue"] in routing.queue_names(), name
    assert route_task("orders.process_order", (), {"region": "eu"}, {})["queue"] == "cloud.eu"
    assert route_task("notifications.send_notification", (), {"region": "eu"}, {})["queue"] == "cloud.eu"
    assert route_task("analytics.track_events", (), {}, {})["queue"] == "analytics"
    assert route_task("exports.export_events", (), {}, {})["queue"] == "analytics"
    assert route_task("jobs.relay_outbox", (), {}, {})["queue"] == "maintenance"
    assert route_task("jobs.prune_history", (), {}, {})["queue"] == "maintenance"
    assert route_task("orders.reconcile_stuck_orders", (), {}, {})["queue"] == "maintenance"
    assert route_task("orders.reconcile_notifications", (), {}, {})["queue"] == "maintenance"
    assert route_task("orders.prune_idempotency_keys", (), {}, {})["queue"] == "maintenance"
    assert route_task("orders.make_thumbnail", (), {}, {})["queue"] == "heavy"
    # A task nobody routes goes to the default queue, which is declared and consumed.
    assert settings.CELERY_TASK_DEFAULT_QUEUE in routing.queue_names()


@pytest.mark.parametrize("region", [None, "", "mars"])
def test_a_resident_task_without_a_known_region_is_never_sent(region):
    with pytest.raises(UnroutableTask, match="names no region of ORDER_REGIONS"):
        route_task("orders.process_order", (), {"order_id": "x", "region": region}, {})


def residency_table() -> dict[str, str]:
    """README "Regions and data residency": each task named in the table -> where it runs."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Regions and data residency", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for name in re.findall(r"`([a-z_]+\.[a-z_]+)`", cells[0]):
                table[name] = cells[2]
    return table


def test_the_residency_table_of_the_readme_is_the_router_s():
    # given: the README's table, with the reconcilers named as a group
    table = residency_table()
    runs = {name: table.get(name, table.get("jobs.relay_outbox")) for name in our_tasks()}

    # then: every task that carries personal data runs in the order's region, and only those; the rest where said
    resident = {name for name, where in runs.items() if where == "the order's region"}
    assert resident == set(routing.RESIDENT_TASKS)
    for name, where in runs.items():
        if name not in resident:
            queue = route_task(name, (), {}, {})["queue"]
            assert f"`{queue}`" in where, (name, where)


def longest_delays(conf, tasks) -> dict[str, float]:
    """Every delay a message can wait or run before it is acknowledged, by where it comes from."""
    delays = {"task_time_limit": conf.task_time_limit, "task_soft_time_limit": conf.task_soft_time_limit}
    for name, task in tasks.items():
        if isinstance(task, ReliableTask):
            delays[f"{name} retry_backoff_max"] = task.retry_backoff_max
        if task.time_limit:
            delays[f"{name} time_limit"] = task.time_limit
    delays["orders.process_order not-visible countdown"] = order_tasks.ORDER_NOT_VISIBLE_RETRY_SECONDS
    for entry, schedule in conf.beat_schedule.items():
        delays[f"beat {entry} expires"] = schedule.get("options", {}).get("expire_seconds", 0)
    return delays


def test_no_delay_can_outlast_the_visibility_timeout():
    # A message held longer than the visibility timeout is delivered a second time while the first still waits.
    visibility_timeout = app.conf.broker_transport_options["visibility_timeout"]

    delays = longest_delays(app.conf, our_tasks())

    assert len(delays) >= 8
    too_long = {source: delay for source, delay in delays.items() if delay >= visibility_timeout}
    assert too_long == {}


def test_the_production_defaults_keep_the_bound_too():
    # The test settings shorten backoff; check the defaults a deployment gets, in a fresh interpreter.
    script = (
        "import json, django; django.setup()\n"
        "from django.conf import settings\n"
        "from tests.test_celery_config import RECOVERY_SETTINGS, longest_delays, our_tasks\n"
        "from proj.celery import app\n"
        "print(json.dumps({'visibility_timeout': app.conf.broker_transport_options['visibility_timeout'],\n"
        "                  'delays': longest_delays(app.conf, our_tasks()),\n"
        "                  'recovery': {name: getattr(settings, name) for name in RECOVERY_SETTINGS}}))\n"
    )
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("CELERY_", "ORDER_", "TASK_", "BROKER_"))
    }
    environment |= {"DJANGO_SETTINGS_MODULE": "proj.settings", "DJANGO_DEBUG": "true"}
    output = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True, timeout=60
    ).stdout

    report = json.loads(output.strip().splitlines()[-1])

    assert report["visibility_timeout"] == 600
    assert report["delays"]["orders.process_order retry_backoff_max"] == 300
    assert {source: delay for source, delay in report["delays"].items() if delay >= 600} == {}
    # The reconcilers and the relay's second sending of unconfirmed events are for messages lost outright: they
    # wait longer than work still in hand can be silent, so they do not double a message that is still coming.
    recovery = report["recovery"]
    for threshold in ("ORDER_STUCK_AFTER_SECONDS", "OUTBOX_EVENT_REDELIVER_AFTER_SECONDS"):
        assert recovery[threshold] > longest_silence_in_hand(recovery), threshold
    assert recovery["NOTIFICATION_MISSING_AFTER_SECONDS"] > longest_silence_in_hand(recovery)


def test_a_dead_workers_messages_come_back_within_the_promised_bound():
    # A worker is dead once its heartbeat key expires (TTL after its last heartbeat); a live one reaps within a
    # heartbeat interval after that. The README promises 15 s.
    assert settings.WORKER_REGISTRY_TTL_SECONDS + settings.WORKER_HEARTBEAT_INTERVAL_SECONDS <= 15
    # ...and a live worker may miss several heartbeats (a GC pause, a busy loop) before it is taken for dead.
    assert settings.WORKER_REGISTRY_TTL_SECONDS >= 3 * settings.WORKER_HEARTBEAT_INTERVAL_SECONDS


def longest_silence_in_hand(values: dict) -> float:
    """How long work still in hand can go without a sign of life: a retry's backoff, then its hard time limit, then
    the reaper's bound should its worker die."""
    reap_bound = values["WORKER_REGISTRY_TTL_SECONDS"] + values["WORKER_HEARTBEAT_INTERVAL_SECONDS"]
    return values["TASK_MAX_DELAY_SECONDS"] + values["CELERY_TASK_TIME_LIMIT"] + reap_bound


RECOVERY_SETTINGS = (
    "TASK_MAX_DELAY_SECONDS",
    "CELERY_TASK_TIME_LIMIT",
    "WORKER_REGISTRY_TTL_SECONDS",
    "WORKER_HEARTBEAT_INTERVAL_SECONDS",
    "ORDER_STUCK_AFTER_SECONDS",
    "OUTBOX_EVENT_REDELIVER_AFTER_SECONDS",
    "NOTIFICATION_MISSING_AFTER_SECONDS",
)


@pytest.mark.parametrize(
    "name",
    ["orders.process_order", "notifications.send_notification", "analytics.track_events", "exports.export_events"],
)
def test_pipeline_tasks_retry_transient_errors_with_backoff_and_jitter(name):
    task = our_tasks()[name]

    assert isinstance(task, ReliableTask)
    assert task.retry_backoff == 2
    assert task.retry_jitter is True
    assert task.max_retries == 8
