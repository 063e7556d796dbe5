"""From the manifest to a real process: the orders pool's container as the production overlay renders it, run here.

The command, its arguments and its environment (the ConfigMap, the Secret, the container's own variables) come from
the rendered manifest. Only what a cluster would provide differently is substituted: PostgreSQL (the test database),
Redis (a redis-server of the test's own), the mail server (a recording backend), the pod's volumes (directories of
the test), its host name and its metrics port (this machine runs several pods' worth of processes).
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from deploy import manifests
from orders.models import Order
from tests.factories import ProductFactory

# The fault tests' conftest, imported before their helpers so that pytest rewrites the helpers' asserts as for them.
from tests.faults import conftest as fault_fixtures
from tests.faults.helpers import (
    FaultEnvironment,
    Worker,
    assert_completed_exactly_once,
    place_one,
    queue_lengths,
    wait_for_orders,
    wait_until_processing,
)
from tests.helpers import wait_for
from tests.ops.helpers import database_url, free_port, parse_metrics

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# The fault tests' fixtures, for the tests here: a broker and a payment ledger of the test's own, its processes.
faults, processes, sandbox_redis = fault_fixtures.faults, fault_fixtures.processes, fault_fixtures.sandbox_redis

ROOT = manifests.ROOT
# What the image sets for every process: the Dockerfile's ENV lines (KEY=VALUE pairs).
IMAGE_ENVIRONMENT = dict(
    pair.split("=", 1)
    for line in (ROOT / "Dockerfile").read_text().splitlines()
    if line.startswith("ENV ")
    for pair in line.split()[1:]
)


class ManifestPool:
    """One worker pool's container spec from the rendered production overlay, started as the kubelet would."""

    def __init__(self, faults: FaultEnvironment, pool: str) -> None:
        self.faults = faults
        self.rendering = manifests.render_overlay("production")
        (self.container,) = [container for container in manifests.containers(self.rendering) if container.name == pool]
        self.pool = pool
        self.started = 0

    @property
    def grace_seconds(self) -> int:
        return self.container.pod["terminationGracePeriodSeconds"]

    @property
    def soft_shutdown_seconds(self) -> float:
        return float(self.environment_of_manifest()["CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"])

    def environment_of_manifest(self) -> dict[str, str]:
        return manifests.environment(self.container, self.rendering)

    def start(self, **overrides: str) -> tuple[Worker, dict[str, str]]:
        """Start the pod's process; return it and its environment."""
        self.started += 1
        name = f"{self.pool}-{self.started}"
        pod = self.faults.work_dir / name
        volumes = {path: pod / path.lstrip("/") for path in self.container.mounts()}
        for directory in [*volumes.values(), pod / "home"]:
            directory.mkdir(parents=True)
        environment = {
            key: next(
                (str(local) + value[len(path) :] for path, local in volumes.items() if value.startswith(path)), value
            )
            for key, value in self.environment_of_manifest().items()
        }
        environment |= IMAGE_ENVIRONMENT | {
            "PATH": os.environ["PATH"],
            "HOME": str(pod / "home"),
            "TMPDIR": str(volumes["/tmp"]),  # noqa: S108 - the pod's /tmp emptyDir
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": database_url(),
            "REDIS_URL": self.faults.broker_url,
            "PAYMENT_SANDBOX_REDIS_URL": self.faults.sandbox_url,
            "SECRET_KEY": "manifest-test-secret-key-not-used-anywhere-else-0123456789",
            "EMAIL_BACKEND": "bench.mail.RecordingBackend",
            "BENCH_MAIL_LOG": str(self.faults.mail_log),
            "WORKER_METRICS_PORT": str(free_port()),
        }
        environment |= overrides
        command = self.container.command
        assert command[0] == "celery"
        # Each pod has a host name of its own; processes on this machine share one.
        local = [sys.executable, "-m", "celery", *command[1:], f"--hostname={name}@{socket.gethostname()}"]
        process = self.faults.processes.start(local, environment=environment, name=name)
        return Worker(process=process, name=name, log_path=self.faults.work_dir / f"{name}.log"), environment

    def probe(self, kind: str, environment: dict[str, str]):
        """The exec probe of the manifest, in the container's environment."""
        command = manifests.local_probe_command(self.container.spec[kind]["exec"]["command"])
        return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=30)

    def start_ready(self, **overrides: str) -> tuple[Worker, dict[str, str]]:
        worker, environment = self.start(**overrides)
        wait_for(
            lambda: self.probe("readinessProbe", environment).returncode == 0 or worker.process.poll() is not None,
            timeout=90,
            message=f"{worker.name} to pass its readiness probe",
        )
        assert worker.process.poll() is None, worker.log()
        return worker, environment


def terminate(worker: Worker) -> float:
    """SIGTERM the worker's main process, as the kubelet does to PID 1; return when it sent it."""
    worker.process.send_signal(signal.SIGTERM)
    return time.monotonic()


def test_the_orders_pool_from_the_manifest_passes_its_probes_and_finishes_its_task_on_sigterm(faults):
    ProductFactory(sku="MUG-001", stock=10)
    orders = ManifestPool(faults, "worker-orders")
    worker, environment = orders.start_ready(PAYMENT_SANDBOX_LATENCY_MS="3000")
    liveness = orders.probe("livenessProbe", environment)
    startup = orders.probe("startupProbe", environment)
    order = place_one("manifest@example.com", quantity=1)
    wait_until_processing(order)
    metrics = parse_metrics(
        requests.get(f"http://127.0.0.1:{environment['WORKER_METRICS_PORT']}/metrics", timeout=10).text
    )

    # when
    sent_at = terminate(worker)
    exit_code = worker.process.wait(timeout=orders.grace_seconds + 10)
    exit_seconds = time.monotonic() - sent_at
    print(f"exit {exit_seconds:.1f} s after SIGTERM")

    # then
    assert (liveness.returncode, liveness.stdout.startswith("alive: heartbeat")) == (0, True)
    assert startup.returncode == 0
    host = socket.gethostname()
    started = (
        "celery_task_started_total",
        (("hostname", host), ("name", "orders.process_order"), ("queue_name", "orders")),
    )
    assert metrics[started] == 1
    assert (exit_code, exit_seconds < orders.grace_seconds) == (0, True)
    assert "Initiating Soft Shutdown" in worker.log()
    assert orders.probe("readinessProbe", environment).returncode == 1
    order.refresh_from_db()
    assert (order.status, order.attempts) == (Order.Status.COMPLETED, 1)
    assert queue_lengths(faults) == {"orders": 0, "unacked": 0}
    ManifestPool(faults, "worker-io").start_ready()  # sends the confirmation the order queued
    assert_completed_exactly_once(faults, [order])
    assert sorted(path.name for path in (faults.work_dir / "worker-orders-1" / "home").iterdir()) == []


def test_a_task_longer_than_the_soft_shutdown_is_requeued_and_the_pod_exits_within_its_grace_period(faults):
    ProductFactory(sku="MUG-001", stock=10)
    orders = ManifestPool(faults, "worker-orders")
    charge_seconds = orders.soft_shutdown_seconds + 5
    worker, _environment = orders.start_ready(PAYMENT_SANDBOX_LATENCY_MS=str(int(charge_seconds * 1000)))
    order = place_one("requeued@example.com", quantity=1)
    wait_until_processing(order)

    # when
    sent_at = terminate(worker)
    exit_code = worker.process.wait(timeout=orders.grace_seconds + 10)
    exit_seconds = time.monotonic() - sent_at

    # then: cancelled once the soft shutdown ran out, its message back in the queue at once, the pod gone in time
    cold_shutdown_seconds = exit_seconds - orders.soft_shutdown_seconds
    print(f"exit {exit_seconds:.1f} s after SIGTERM, cold shutdown {cold_shutdown_seconds:.1f} s")
    assert exit_code == 0
    assert orders.soft_shutdown_seconds <= exit_seconds < orders.grace_seconds
    assert Order.objects.get(pk=order.pk).status == Order.Status.PROCESSING
    assert queue_lengths(faults) == {"orders": 1, "unacked": 0}
    orders.start_ready()
    ManifestPool(faults, "worker-io").start_ready()
    wait_for_orders([order.pk], timeout=60)
    assert_completed_exactly_once(faults, [order])
    assert Order.objects.get(pk=order.pk).attempts == 2
