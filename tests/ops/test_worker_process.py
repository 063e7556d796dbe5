"""A real worker process (prefork, two children): probe files, the metrics endpoint, JSON logs; Flower beside it."""

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from jobs.models import OutboxMessage
from notifications.models import Notification
from notifications.tasks import send_notification_task
from orders.models import Order
from orders.services import RequestedItem, place_order
from tests.factories import ProductFactory
from tests.helpers import wait_for
from tests.ops.helpers import (
    TcpProxy,
    check_with_promtool,
    free_port,
    parse_metrics,
    purge_queues,
    worker_environment,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
# Every queue but `heavy`, as the production worker line (Procfile, docker-compose.yml).
EXCLUDED_QUEUES = "heavy"
FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-test-password"


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    probe_dir: Path
    log_path: Path
    metrics_url: str
    hostname: str

    def log_entries(self) -> list[dict]:
        """The worker's JSON log lines (the console email backend prints plain text among them)."""
        entries = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                entries.append(json.loads(line))
        return entries


def start_worker(directory: Path, **environment: str) -> WorkerProcess:
    directory.mkdir(parents=True, exist_ok=True)
    hostname = f"ops-test-{os.getpid()}-{directory.name}@{socket.gethostname()}"
    metrics_port = free_port()
    log_path = directory / "worker.log"
    environment = worker_environment(
        WORKER_PROBE_DIR=str(directory / "probes"),
        WORKER_HEARTBEAT_INTERVAL_SECONDS="0.5",
        WORKER_METRICS_PORT=str(metrics_port),
        WORKER_METRICS_ADDRESS="127.0.0.1",
        WORKER_METRICS_DIR=str(directory / "metrics"),
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        **environment,
    )
    command = [sys.executable, "-m", "celery", "-A", "proj", "worker", "--pool", "prefork", "--concurrency", "2"]
    command += ["--exclude-queues", EXCLUDED_QUEUES, "--hostname", hostname, "--loglevel", "INFO", "--without-mingle"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    return WorkerProcess(
        process=process,
        probe_dir=directory / "probes",
        log_path=log_path,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        hostname=hostname,
    )


def stop(worker: WorkerProcess) -> int:
    if worker.process.poll() is None:
        worker.process.send_signal(signal.SIGTERM)
        try:
            return worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.process.kill()
    return worker.process.wait(timeout=30)


def probe(check: str, worker: WorkerProcess, *extra: str) -> subprocess.CompletedProcess:
    """What a Kubernetes exec probe runs: the standard-library script, not the Celery app."""
    return subprocess.run(
        [sys.executable, "-m", "ops.probes", check, "--dir", str(worker.probe_dir), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def worker(django_db_setup, tmp_path_factory) -> Iterator[WorkerProcess]:
    # Messages an earlier test left would reach this worker first and add to the counts the tests assert.
    purge_queues()
    directory = tmp_path_factory.mktemp("worker")
    # What a previous run of the worker left: its metric files must go (they would add stale counts), nothing else.
    (directory / "metrics").mkdir()
    (directory / "metrics" / "counter_4242.db").write_bytes(b"left by an earlier run")
    (directory / "metrics" / "notes.txt").write_text("not prometheus_client's")
    worker = start_worker(directory, PAYMENT_SANDBOX_TIMEOUTS_BEFORE_SUCCESS="1")
    try:
        wait_for(
            lambda: (worker.probe_dir / "ready").exists() or worker.process.poll() is not None,
            timeout=90,
            message="the worker to be ready",
        )
        assert worker.process.poll() is None, worker.log_path.read_text()
        yield worker
    finally:
        stop(worker)


def place(token: str) -> Order:
    return place_order(
        email="ada@example.com", region="eu", items=[RequestedItem("MUG-001", 1)], payment_token=token
    ).order


def process_order_task_id(order: Order) -> str:
    return str(
        OutboxMessage.objects.get(name="orders.process_order", payload={"order_id": str(order.pk), "region": "eu"}).pk
    )


def test_the_probes_pass_while_the_worker_consumes(worker):
    first_beat = (worker.probe_dir / "heartbeat").stat().st_mtime
    wait_for(
        lambda: (worker.probe_dir / "heartbeat").stat().st_mtime > first_beat,
        timeout=30,
        message="the event loop to touch the heartbeat again",
    )

    liveness, readiness = probe("liveness", worker), probe("readiness", worker)

    assert (liveness.returncode, liveness.stdout.startswith("alive: heartbeat")) == (0, True)
    assert (readiness.returncode, readiness.stdout) == (0, "ready: consuming\n")


def test_task_metrics_of_every_worker_process_on_one_endpoint(worker):
    ProductFactory(sku="MUG-001", stock=10)
    for token in ("tok_visa", "tok_chargeDeclined", "tok_timeout"):  # tok_timeout: one retry, then success
        place(token)
    # No such template: fails at once (not a transient error), and is dead-lettered.
    send_notification_task.apply_async(
        kwargs={"order_id": "0b6bd2b5-7c1a-4a5e-9d27-3f1c6f1d2c11", "channel": "email", "kind": "no_such_kind",
                "recipient": "ada@example.com", "context": {}, "region": "eu"},
    )  # fmt: skip
    wait_for(
        lambda: Notification.objects.filter(status="sent").count() == 3,
        timeout=60,
        message="three orders to finish and notify",
    )

    def metrics() -> dict:
        return parse_metrics(requests.get(worker.metrics_url, timeout=10).text)

    host = worker.hostname.partition("@")[2]

    def labels(name: str, queue: str, **extra: str) -> tuple:
        return tuple(sorted({"name": name, "hostname": host, "queue_name": queue, **extra}.items()))

    orders, notifications = (
        labels("orders.process_order", "cloud.eu"),
        labels("notifications.send_notification", "cloud.eu"),
    )
    failed = labels("notifications.send_notification", "cloud.eu", exception="TemplateDoesNotExist")
    wait_for(
        lambda: (
            metrics().get(("celery_task_failed_total", failed)) == 1
            and metrics().get(("celery_task_succeeded_total", notifications)) == 3
        ),
        timeout=30,
        message="the worker's processes to record the tasks",
    )

    samples = metrics()
    assert samples[("celery_task_started_total", orders)] == 4
    assert samples[("celery_task_succeeded_total", orders)] == 3
    assert samples[("celery_task_retried_total", orders)] == 1
    assert samples[("celery_task_runtime_count", orders)] == 3
    assert samples[("celery_task_started_total", notifications)] == 4
    assert samples[("celery_task_succeeded_total", notifications)] == 3
    assert samples[("celery_task_failed_total", failed)] == 1
    metrics_files = {path.name for path in (worker.probe_dir.parent / "metrics").iterdir()}
    assert "counter_4242.db" not in metrics_files
    assert "notes.txt" in metrics_files
    result = check_with_promtool(requests.get(worker.metrics_url, timeout=10).text)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_every_log_line_of_a_task_carries_its_task_and_order(worker):
    ProductFactory(sku="MUG-001", stock=10)
    order = place("tok_visa")
    task_id = process_order_task_id(order)
    wait_for(
        lambda: Notification.objects.filter(order_id=order.pk, status="sent").exists(),
        timeout=60,
        message="the order to be processed and notified",
    )
    wait_for(
        lambda: any(entry.get("task_id") == task_id for entry in worker.log_entries()),
        timeout=30,
        message="the task's log lines",
    )

    entries = worker.log_entries()

    task_lines = [entry for entry in entries if entry.get("task_id") == task_id]
    assert {(entry["task_name"], entry["order_id"]) for entry in task_lines} == {
        ("orders.process_order", str(order.pk))
    }
    assert any(entry["message"].startswith(f"Task orders.process_order[{task_id}] succeeded") for entry in task_lines)
    # Every line Celery logs while tracing a task carries the context, not only this task's.
    traced = [entry for entry in entries if entry["logger"] == "celery.app.trace"]
    assert traced
    assert all({"task_id", "task_name", "order_id"} <= set(entry) for entry in traced)


def test_flower_shows_the_worker_and_its_tasks_behind_basic_auth(worker):
    port = free_port()
    environment = worker_environment(
        FLOWER_BASIC_AUTH=f"{FLOWER_USER}:{FLOWER_PASSWORD}", FLOWER_URL_PREFIX="flower", LOG_LEVEL="WARNING"
    )
    command = [sys.executable, "-m", "celery", "-A", "proj", "flower", "--conf=proj/flowerconfig.py"]
    command += [f"--port={port}", "--address=127.0.0.1"]
    flower = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    api = f"http://127.0.0.1:{port}/flower/api"
    auth = (FLOWER_USER, FLOWER_PASSWORD)
    try:

        def worker_online() -> bool:
            assert flower.poll() is None, flower.stderr.read().decode()
            try:
                response = requests.get(f"{api}/workers", params={"status": "true"}, auth=auth, timeout=5)
            except requests.ConnectionError:
                return False
            return response.ok and response.json().get(worker.hostname) is True

        # Flower has seen the worker's heartbeat events, so it also receives the task events from here on.
        wait_for(worker_online, timeout=60, message="Flower to see the worker online")
        ProductFactory(sku="MUG-001", stock=10)
        order = place("tok_visa")
        task_id = process_order_task_id(order)

        def succeeded_task() -> dict | None:
            response = requests.get(f"{api}/tasks", params={"taskname": "orders.process_order"}, auth=auth, timeout=5)
            task = response.json().get(task_id)
            return task if task and task["state"] == "SUCCESS" else None

        task = wait_for(succeeded_task, timeout=60, message="Flower to show the processed task")

        assert (task["name"], task["worker"], task["result"]) == (
            "orders.process_order",
            worker.hostname,
            "'completed'",
        )
        assert str(order.pk) in task["kwargs"]
        assert requests.get(f"{api}/workers", params={"status": "true"}, timeout=5).status_code == 401
        assert requests.get(f"{api}/tasks", auth=(FLOWER_USER, "wrong"), timeout=5).status_code == 401
    finally:
        flower.terminate()
        flower.wait(timeout=30)


def test_flower_refuses_to_start_in_production_without_credentials():
    environment = worker_environment(DJANGO_DEBUG="false", SECRET_KEY="x" * 50, FLOWER_BASIC_AUTH="")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "proj",
            "flower",
            "--conf=proj/flowerconfig.py",
            f"--port={free_port()}",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "Flower refuses to start without authentication in production (DJANGO_DEBUG is off): "
        "set FLOWER_BASIC_AUTH=user:password."
    )


def test_liveness_fails_when_the_event_loop_stops(worker):
    worker.process.send_signal(signal.SIGSTOP)
    try:
        failed = wait_for(
            lambda: (result := probe("liveness", worker, "--max-age", "2")).returncode == 1 and result,
            timeout=30,
            message="the heartbeat to go stale",
        )
    finally:
        worker.process.send_signal(signal.SIGCONT)

    assert failed.stdout.startswith("not alive: the heartbeat is ")
    wait_for(lambda: probe("liveness", worker, "--max-age", "2").returncode == 0, timeout=30, message="recovery")


def test_sigterm_withdraws_readiness_and_stops_cleanly(worker):
    assert probe("readiness", worker).returncode == 0

    exit_code = stop(worker)

    assert exit_code == 0
    readiness = probe("readiness", worker)
    assert (readiness.returncode, readiness.stdout.startswith("not ready")) == (1, True)
    assert sorted(path.name for path in worker.probe_dir.iterdir()) == []


def test_liveness_holds_while_the_broker_is_unreachable(tmp_path, django_db_setup):
    # Nothing listens on this port: the worker starts and keeps retrying the broker, as during an outage.
    worker = start_worker(tmp_path / "no-broker", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    try:
        wait_for(
            lambda: (worker.probe_dir / "connecting").exists() or worker.process.poll() is not None,
            timeout=60,
            message="the worker to start waiting for the broker",
        )
        assert worker.process.poll() is None, worker.log_path.read_text()

        liveness, readiness = probe("liveness", worker, "--max-age", "1"), probe("readiness", worker)

        assert (liveness.returncode, liveness.stdout) == (
            0,
            "alive: waiting for the broker (the event loop resumes once it is reachable)\n",
        )
        assert (readiness.returncode, readiness.stdout) == (
            1,
            "not ready: the worker has not started consuming, or is shutting down\n",
        )
    finally:
        # Its shutdown is not what this test is about, and would wait for the next connection attempt.
        worker.process.kill()
        worker.process.wait(timeout=30)


def test_a_lost_broker_withdraws_readiness_but_not_liveness(tmp_path, django_db_setup, settings):
    broker = urlsplit(settings.CELERY_BROKER_URL)
    proxy = TcpProxy((broker.hostname, broker.port))
    proxy.restore()
    worker = start_worker(
        tmp_path / "lost-broker", REDIS_URL=broker._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
    )
    try:
        wait_for(lambda: probe("readiness", worker).returncode == 0, timeout=60, message="the worker to be ready")

        proxy.cut()
        wait_for(
            lambda: (worker.probe_dir / "connecting").exists(), timeout=30, message="the worker to notice the loss"
        )
        liveness, readiness = probe("liveness", worker, "--max-age", "1"), probe("readiness", worker)
        proxy.restore()
        wait_for(lambda: probe("readiness", worker).returncode == 0, timeout=60, message="the worker to reconnect")

        assert liveness.returncode == 0
        assert (readiness.returncode, readiness.stdout) == (
            1,
            "not ready: the worker lost the broker and is reconnecting\n",
        )
        assert not (worker.probe_dir / "connecting").exists()
    finally:
        worker.process.kill()
        worker.process.wait(timeout=30)
        proxy.cut()
