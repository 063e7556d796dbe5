"""From the manifest to a real process: the pools' containers as the production overlay renders them, run here.

The command, its arguments and its environment (the ConfigMap, the Secret, the container's own variables) come from
the rendered manifest. Only what a cluster would provide differently is substituted: PostgreSQL (the test database),
Redis (a redis-server of the test's own), the mail server (a recording backend), the pod's volumes (directories of
the test; a claim is one directory, whichever pod mounts it), its host name and its ports (this machine runs several
pods' worth of processes), and the Secret's values. An audit hook in every process records where it writes, so the
tests can tell that nothing was written outside the pod's writable volumes, as the read-only root file system of the
manifests requires.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests
from django.test import override_settings

from deploy import manifests
from deploy.autoscale.pods import on_volumes
from orders import catalog
from orders.models import Order, Product
from tests.deploy import dockerfile
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
from tests.images import dimensions, picture, upload
from tests.ops.helpers import database_url, free_port, parse_metrics

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# The fault tests' fixtures, for the tests here: a broker and a payment ledger of the test's own, its processes.
faults, processes, sandbox_redis = fault_fixtures.faults, fault_fixtures.processes, fault_fixtures.sandbox_redis

ROOT = manifests.ROOT
# What the image sets for every process: the ENV lines of the Dockerfile's last stage (the image; a build stage's
# environment stays in that stage).
IMAGE_ENVIRONMENT = dockerfile.image().environment
# Loaded by every Python process of a container through PYTHONPATH (and inherited by forked pool children): records
# each path a process opens for writing, creates, renames, removes, touches or binds a Unix socket at (PEP 578
# audit hooks), so a test can tell whether anything was written outside the pod's writable volumes.
WRITE_AUDIT_HOOK = """
import os, sys
_log = os.open(os.environ["WRITE_AUDIT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.symlink", "os.link",
                "os.utime", "os.truncate", "os.chmod", "os.chown", "os.mkfifo", "os.mknod", "shutil.rmtree"}

def _record(event, path):
    if isinstance(path, (str, bytes, os.PathLike)):
        path = os.fsdecode(path)
        os.write(_log, f"{event}\\t{os.path.abspath(path)}\\n".encode())

def _hook(event, args):
    if event == "open" and isinstance(args[2], int) and args[2] & _WRITES:
        _record(event, args[0])
    elif event in _PATH_EVENTS:
        _record(event, args[0])
        if event in {"os.rename", "os.replace", "os.symlink", "os.link"}:
            _record(event, args[1])
    elif event == "socket.bind" and isinstance(args[1], (str, bytes)):
        _record(event, args[1])

sys.addaudithook(_hook)
"""
# What the kubelet runs for each command name, here: this Python and the tools installed beside it.
LOCAL_COMMANDS = {
    "celery": [sys.executable, "-m", "celery"],
    "gunicorn": [str(Path(sys.executable).parent / "gunicorn")],
    "python": [sys.executable],
}


class ManifestContainer:
    """One container spec from the rendered production overlay, started here as the kubelet would start it."""

    def __init__(self, faults: FaultEnvironment, name: str) -> None:
        self.faults = faults
        self.rendering = manifests.render_overlay("production")
        (self.container,) = [container for container in manifests.containers(self.rendering) if container.name == name]
        self.started = 0
        self.audit_log = faults.work_dir / f"{name}-writes.log"
        self.pods: list[Path] = []

    @property
    def grace_seconds(self) -> int:
        return self.container.pod["terminationGracePeriodSeconds"]

    @property
    def soft_shutdown_seconds(self) -> float:
        return float(self.environment_of_manifest()["CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"])

    def environment_of_manifest(self) -> dict[str, str]:
        return manifests.environment(self.container, self.rendering, fields={"status.podIP": "127.0.0.1"})

    def volumes(self, pod: Path) -> dict[str, Path]:
        """mountPath -> the directory standing for that volume in one pod: the pod's own for an emptyDir, the
        claim's for a PersistentVolumeClaim (every pod that mounts it sees the same files)."""
        return {
            path: claim_directory(self.faults, volume["persistentVolumeClaim"]["claimName"])
            if "persistentVolumeClaim" in volume
            else pod / "volumes" / path.lstrip("/")
            for path, volume in self.container.mounts().items()
        }

    def start(self, *, ports: dict[str, int] | None = None, **overrides: str) -> tuple[Worker, dict[str, str]]:
        """Start the pod's process; return it and its environment. `ports`: the manifest's port -> a free one."""
        self.started += 1
        name = f"{self.container.name}-{self.started}"
        pod = self.faults.work_dir / name
        self.pods.append(pod)
        volumes = self.volumes(pod)
        for directory in [*volumes.values(), pod / "home", pod / "audit"]:
            directory.mkdir(parents=True, exist_ok=directory.is_relative_to(claim_directory(self.faults, "")))
        (pod / "audit" / "sitecustomize.py").write_text(WRITE_AUDIT_HOOK)
        environment = {key: on_volumes(value, volumes) for key, value in self.environment_of_manifest().items()}
        environment |= IMAGE_ENVIRONMENT | {
            "PATH": os.environ["PATH"],
            "HOME": str(pod / "home"),
            "TMPDIR": str(volumes["/tmp"]),  # noqa: S108 - the pod's /tmp emptyDir
            "PYTHONPATH": f"{pod / 'audit'}:{ROOT}",
            "WRITE_AUDIT_LOG": str(self.audit_log),
            "DATABASE_URL": database_url(),
            "REDIS_URL": self.faults.broker_url,
            "PAYMENT_SANDBOX_REDIS_URL": self.faults.sandbox_url,
            "SECRET_KEY": "manifest-test-secret-key-not-used-anywhere-else-0123456789",
            "FLOWER_BASIC_AUTH": "ops:manifest-test-password",
            "EMAIL_BACKEND": "bench.mail.RecordingBackend",
            "BENCH_MAIL_LOG": str(self.faults.mail_log),
            "WORKER_METRICS_PORT": str(free_port()),
        }
        environment |= overrides
        command = [
            *LOCAL_COMMANDS[self.container.command[0]],
            *(on_volumes(argument, volumes) for argument in self.container.command[1:]),
        ]
        for port, local in (ports or {}).items():
            command = [argument.replace(f"0.0.0.0:{port}", f"127.0.0.1:{local}") for argument in command]
            command = [argument.replace(f"--port={port}", f"--port={local}") for argument in command]
        hostname = f"{name}@{socket.gethostname()}"
        if manifests.is_worker(self.container):
            # Each pod has a host name of its own; processes on this machine share one.
            command.append(f"--hostname={hostname}")
        process = self.faults.processes.start(command, environment=environment, name=name)
        log_path = self.faults.work_dir / f"{name}.log"
        return Worker(process=process, name=name, log_path=log_path, hostname=hostname), environment

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

    def written_outside_volumes(self) -> list[str]:
        """Paths the processes wrote to other than the pods' volumes (and devices such as /dev/null). The mail log
        is not the pod's: it stands for the mail server the notifications are sent to."""
        allowed = [str(directory) for pod in self.pods for directory in self.volumes(pod).values()]
        written = self.audit_log.read_text().splitlines() if self.audit_log.exists() else []
        return sorted(
            {
                line
                for line in written
                if not any(line.split("\t")[1].startswith(f"{directory}/") for directory in allowed)
                and not line.split("\t")[1].startswith("/dev/")
                and line.split("\t")[1] != str(self.faults.mail_log)
            }
        )


def claim_directory(faults: FaultEnvironment, claim: str) -> Path:
    """The directory standing for PersistentVolumeClaim `claim` in this test's cluster."""
    return faults.work_dir / "claims" / claim


def terminate(worker: Worker) -> float:
    """SIGTERM the worker's main process, as the kubelet does to PID 1; return when it sent it."""
    worker.process.send_signal(signal.SIGTERM)
    return time.monotonic()


def test_the_orders_pool_from_the_manifest_passes_its_probes_and_finishes_its_task_on_sigterm(faults):
    ProductFactory(sku="MUG-001", stock=10)
    orders = ManifestContainer(faults, "worker-orders")
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
        (("hostname", host), ("name", "orders.process_order"), ("queue_name", "cloud.eu")),
    )
    assert metrics[started] == 1
    assert (exit_code, exit_seconds < orders.grace_seconds) == (0, True)
    assert "Initiating Soft Shutdown" in worker.log()
    assert orders.probe("readinessProbe", environment).returncode == 1
    order.refresh_from_db()
    assert (order.status, order.attempts) == (Order.Status.COMPLETED, 1)
    # Its confirmation, queued on cloud.eu as it completed, waits for the pool's next pod, which sends it.
    assert queue_lengths(faults) == {"orders": 1, "unacked": 0}
    orders.start_ready()
    assert_completed_exactly_once(faults, [order])
    assert orders.written_outside_volumes() == []
    assert orders.audit_log.read_text().count("/volumes/run/worker/probes/") > 0  # the audit sees the writes


def test_a_task_longer_than_the_soft_shutdown_is_requeued_and_the_pod_exits_within_its_grace_period(faults):
    ProductFactory(sku="MUG-001", stock=10)
    orders = ManifestContainer(faults, "worker-orders")
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
    orders.start_ready()  # the order and then its confirmation, both on cloud.eu
    wait_for_orders([order.pk], timeout=60)
    assert_completed_exactly_once(faults, [order])
    assert Order.objects.get(pk=order.pk).attempts == 2
    assert orders.written_outside_volumes() == []


def test_the_migrate_job_web_beat_and_flower_from_the_manifest_run_and_write_only_to_their_volumes(faults):
    # given: migrations are applied once, by the Job's container
    migrate = ManifestContainer(faults, "migrate")
    job, _environment = migrate.start()
    assert job.process.wait(timeout=120) == 0, job.log()
    web = ManifestContainer(faults, "web")
    web_port = free_port()
    web_process, _environment = web.start(ports={8000: web_port})

    def get(probe: str) -> requests.Response:
        check = web.container.spec[probe]["httpGet"]
        headers = {header["name"]: header["value"] for header in check.get("httpHeaders", [])}
        return requests.get(f"http://127.0.0.1:{web_port}{check['path']}", headers=headers, timeout=10)

    wait_for(lambda: _answers(lambda: get("startupProbe")), timeout=60, message="gunicorn to answer")
    flower = ManifestContainer(faults, "flower")
    flower_port = free_port()
    flower_process, flower_environment = flower.start(ports={5555: flower_port})
    wait_for(
        lambda: _answers(lambda: requests.get(f"http://127.0.0.1:{flower_port}/healthcheck", timeout=5)),
        timeout=60,
        message="Flower to answer",
    )
    beat = ManifestContainer(faults, "beat")
    beat_process, _environment = beat.start()
    wait_for(
        lambda: redis.Redis.from_url(faults.broker_url).llen("maintenance") > 0,
        timeout=60,
        message="beat to send the outbox relay",
    )

    # when: the kubelet's probes and Prometheus' scrape (Host: the pod's IP, 127.0.0.1 here)
    probes = {probe: get(probe).status_code for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
    scraped = requests.get(f"http://127.0.0.1:{web_port}/metrics", timeout=10)
    user, password = flower_environment["FLOWER_BASIC_AUTH"].split(":")
    flower_anonymous = requests.get(f"http://127.0.0.1:{flower_port}/api/workers", timeout=10)
    flower_signed_in = requests.get(f"http://127.0.0.1:{flower_port}/api/workers", auth=(user, password), timeout=10)
    for process in (web_process, flower_process, beat_process):
        process.process.send_signal(signal.SIGTERM)
    exits = [process.process.wait(timeout=60) for process in (web_process, flower_process, beat_process)]

    # then
    assert probes == {"startupProbe": 200, "livenessProbe": 200, "readinessProbe": 200}
    assert (scraped.status_code, "celery_queue_length" in scraped.text) == (200, True)
    assert (flower_anonymous.status_code, flower_signed_in.status_code) == (401, 200)
    assert exits == [0, 0, 0]
    assert "Beat holds the schedule lock" in beat_process.log()
    assert "/volumes/tmp/wgunicorn-" in web.audit_log.read_text()  # gunicorn's heartbeat files: the audit sees them
    containers = {"migrate": migrate, "web": web, "flower": flower, "beat": beat}
    assert {name: container.written_outside_volumes() for name, container in containers.items()} == {
        name: [] for name in containers
    }


def _answers(request) -> bool:
    try:
        return request().status_code < 500
    except requests.ConnectionError:
        return False


def test_the_heavy_pool_from_the_manifest_thumbnails_the_image_web_stored_on_the_media_claim(faults, thumbnail_module):
    web = ManifestContainer(faults, "web")
    heavy = ManifestContainer(faults, "worker-heavy")
    media_root = str(dockerfile.path_in_image("MEDIA_ROOT"))  # /app/var/media, the settings' default in the image
    claim = heavy.container.mounts()[media_root]["persistentVolumeClaim"]["claimName"]
    media = claim_directory(faults, claim)
    # given web and the heavy pool mount the same claim at MEDIA_ROOT, so their files are this one directory
    assert web.container.mounts()[media_root]["persistentVolumeClaim"] == {"claimName": claim}
    web_media = web.volumes(faults.work_dir / "web")[media_root]
    assert web_media == media
    # The manifest leaves MEDIA_ROOT to its default, BASE_DIR / "var/media": /app/var/media in the image, but
    # BASE_DIR is this checkout here, so the pod's process is told explicitly where its mount's directory is (as
    # `on_volumes` moves the paths the manifest does name). The module is the checkout's var/wasm/thumbnail.wasm,
    # standing for the one the image has at that default path too.
    assert "MEDIA_ROOT" not in heavy.environment_of_manifest()
    worker, _environment = heavy.start_ready(MEDIA_ROOT=str(media))
    product = ProductFactory(sku="HEAVY-MANIFEST")

    # when web stores a product's image, as the admin does (this test's process standing for the web pod)
    with override_settings(MEDIA_ROOT=str(web_media)):
        catalog.set_product_image(product_id=product.pk, image=upload(picture(640, 480), "photo.jpg"))
    wait_for(
        lambda: Product.objects.get(pk=product.pk).thumbnail_status != "pending",
        timeout=120,
        interval=0.5,
        message="the heavy pool to thumbnail the product",
    )

    # then the pod made the thumbnail on the claim, beside the image, and wrote nowhere else
    product.refresh_from_db()
    assert (product.thumbnail_status, product.thumbnail_width, product.thumbnail_height) == ("ready", 300, 225)
    stored = sorted(str(path.relative_to(media)) for path in media.rglob("*") if path.is_file())
    assert stored == sorted([product.image.name, product.thumbnail.name])
    assert dimensions((media / product.thumbnail.name).read_bytes()) == ("PNG", 300, 225)
    assert f"{media / product.thumbnail.name}" in heavy.audit_log.read_text()  # written by the pod's process
    assert "Thumbnail sandbox ready in pool process" in worker.log()
    assert heavy.written_outside_volumes() == []
