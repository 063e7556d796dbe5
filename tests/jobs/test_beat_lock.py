"""Two real `celery -A proj beat` processes on one database and one broker: only the holder of the lock schedules.

The beats publish to a redis-server of the test's own, with no worker consuming, so every message either beat sent
is still in the queue when the test reads it: its `origin` header names the process that sent it, its
`periodic_task_name` the entry, and its `expires` (the entry's expire_seconds after sending) when it was sent.
"""

import json
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import redis
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from bench.environment import Processes, RedisServer
from jobs import routing
from proj.celery import app as celery_app
from tests.helpers import wait_for
from tests.ops.helpers import worker_environment

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SCHEDULER = "jobs.beat:LockedDatabaseScheduler"
RELAY_INTERVAL_SECONDS = 1.0
# The holder is SIGKILLed: PostgreSQL sees its connection close at once and ends the session. Then the waiting beat's
# next poll (jobs.beat.LOCK_POLL_SECONDS, 1 s) takes the lock, builds its schedule and sends the relay once its
# interval since the last run has passed.
TAKEOVER_BOUND_SECONDS = 5.0
# One beat sends relay-outbox every interval, give or take its wake-up jitter. Two beats at once, each on its own
# phase, would leave a gap of at most half the interval between one's send and the other's, every interval.
SMALLEST_RELAY_GAP_SECONDS = RELAY_INTERVAL_SECONDS / 2
ENTRIES_DUE_AT_START = {"reconcile-stuck-orders", "reconcile-notifications", "prune-idempotency-keys"}


@dataclass(frozen=True)
class Sent:
    entry: str
    pid: int
    at: float  # seconds since the epoch


def start_beat(processes: Processes, broker: RedisServer, name: str):
    environment = worker_environment(
        REDIS_URL=broker.url,
        OUTBOX_RELAY_INTERVAL_SECONDS=str(RELAY_INTERVAL_SECONDS),
        LOG_FORMAT="text",
        LOG_LEVEL="INFO",
        PYTHONPATH=str(ROOT),
    )
    command = [sys.executable, "-m", "celery", "-A", "proj", "beat", "--scheduler", SCHEDULER, "--loglevel", "INFO"]
    return processes.start(command, environment=environment, name=name)


def log(processes: Processes, name: str) -> str:
    return (processes.log_dir / f"{name}.log").read_text(errors="replace")


def sent_messages(broker: RedisServer) -> list[Sent]:
    """Every message in the broker's queues, oldest first."""
    client = redis.Redis.from_url(broker.url)
    messages = []
    for queue in routing.queue_names():
        for raw in client.lrange(queue, 0, -1):
            headers = json.loads(raw)["headers"]
            expires = datetime.fromisoformat(headers["expires"])
            expire_seconds = PeriodicTask.objects.get(name=headers["periodic_task_name"]).expire_seconds
            messages.append(
                Sent(
                    entry=headers["periodic_task_name"],
                    pid=int(headers["origin"].removeprefix("gen").partition("@")[0]),
                    at=(expires - timedelta(seconds=expire_seconds)).timestamp(),
                )
            )
    return sorted(messages, key=lambda message: message.at)


def install_schedule_due_now() -> None:
    """The schedule's rows, each interval entry last run two hours ago (so due at once); the daily prune paused."""
    DatabaseScheduler(app=celery_app)
    PeriodicTask.objects.filter(interval__isnull=False).update(last_run_at=timezone.now() - timedelta(hours=2))
    PeriodicTask.objects.filter(name="prune-history").update(enabled=False)


@pytest.fixture
def processes(tmp_path):
    with Processes(tmp_path) as processes:
        yield processes


def test_a_second_beat_waits_takes_over_when_the_first_is_killed_and_no_entry_is_sent_twice(processes, tmp_path):
    broker = RedisServer(processes, tmp_path, name="broker")
    install_schedule_due_now()
    first = start_beat(processes, broker, "beat-first")
    wait_for(
        lambda: "Beat holds the schedule lock: scheduling." in log(processes, "beat-first"),
        timeout=60,
        message="the first beat to take the lock",
    )
    second = start_beat(processes, broker, "beat-second")
    wait_for(
        lambda: "waiting for its lock." in log(processes, "beat-second"),
        timeout=60,
        message="the second beat to wait",
    )
    assert f"Another beat schedules (celery-beat {os.uname().nodename} pid {first.pid})" in log(
        processes, "beat-second"
    )
    time.sleep(4 * RELAY_INTERVAL_SECONDS)  # both run: only the first may send

    # when
    os.killpg(first.pid, signal.SIGKILL)
    killed_at = time.time()
    first.wait(timeout=10)
    wait_for(
        lambda: any(message.pid == second.pid for message in sent_messages(broker)),
        timeout=30,
        message="the second beat to send",
    )
    time.sleep(3 * RELAY_INTERVAL_SECONDS)
    processes.stop(second)

    # then
    messages = sent_messages(broker)
    senders = [message.pid for message in messages]
    switch = senders.index(second.pid)
    assert set(senders[:switch]) == {first.pid}
    assert set(senders[switch:]) == {second.pid}  # never both: no message of the first after the second began
    print(f"takeover {messages[switch].at - killed_at:.2f} s after the SIGKILL")
    assert messages[switch].at - killed_at < TAKEOVER_BOUND_SECONDS
    assert "Beat holds the schedule lock after waiting" in log(processes, "beat-second")
    # Entries that were due once were sent once, by the first; the second read when they last ran.
    others = Counter((message.entry, message.pid) for message in messages if message.entry != "relay-outbox")
    assert others == Counter({(entry, first.pid): 1 for entry in ENTRIES_DUE_AT_START})
    relay_times = [message.at for message in messages if message.entry == "relay-outbox"]
    gaps = [later - earlier for earlier, later in pairwise(relay_times)]
    assert len(relay_times) >= 7
    assert min(gaps) >= SMALLEST_RELAY_GAP_SECONDS, gaps
    assert second.returncode == 0


def test_a_waiting_beat_stops_at_once_on_sigterm(processes, tmp_path):
    broker = RedisServer(processes, tmp_path, name="broker")
    first = start_beat(processes, broker, "beat-first")
    wait_for(lambda: "Beat holds the schedule lock" in log(processes, "beat-first"), timeout=60, message="the lock")
    second = start_beat(processes, broker, "beat-second")
    wait_for(lambda: "waiting for its lock." in log(processes, "beat-second"), timeout=60, message="the wait")

    started = time.monotonic()
    second.send_signal(signal.SIGTERM)
    exit_code = second.wait(timeout=10)

    assert (exit_code, time.monotonic() - started < 3) == (0, True)
    assert first.poll() is None
    assert "Beat holds the schedule lock" not in log(processes, "beat-second")


def test_a_beat_whose_lock_session_ends_stops_scheduling_and_the_waiting_one_takes_over(processes, tmp_path):
    broker = RedisServer(processes, tmp_path, name="broker")
    first = start_beat(processes, broker, "beat-first")
    wait_for(lambda: "Beat holds the schedule lock" in log(processes, "beat-first"), timeout=60, message="the lock")
    second = start_beat(processes, broker, "beat-second")
    wait_for(lambda: "waiting for its lock." in log(processes, "beat-second"), timeout=60, message="the wait")
    wait_for(lambda: sent_messages(broker), timeout=30, message="the first beat to send")

    # when: PostgreSQL ends the holder's lock session, as it does once keepalives find the holder unreachable
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [f"celery-beat {os.uname().nodename} pid {first.pid}"],
        )
        assert cursor.fetchone() == (True,)
    ended_at = time.time()
    first.wait(timeout=30)
    wait_for(
        lambda: any(message.pid == second.pid for message in sent_messages(broker)),
        timeout=30,
        message="the second beat to send",
    )
    processes.stop(second)

    # then: the first sent nothing once its session was gone, and stopped; the second took over
    messages = sent_messages(broker)
    assert {message.pid for message in messages if message.at < ended_at} == {first.pid}
    assert [message for message in messages if message.pid == first.pid and message.at > ended_at] == []
    assert "Beat lost the schedule lock (the lock's connection failed:" in log(processes, "beat-first")
    assert min(message.at for message in messages if message.pid == second.pid) - ended_at < TAKEOVER_BOUND_SECONDS
