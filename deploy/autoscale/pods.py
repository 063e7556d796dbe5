"""A Deployment's pods on this machine: one container of the rendered production overlay, started as the kubelet
would start it, one process group per pod.

The command, its arguments and its environment (the ConfigMap, the Secret, the container's own variables) come
from the manifest. Only what a cluster provides differently is substituted: PostgreSQL, Redis and the payment
sandbox's Redis (the caller's), the mail server (bench's recording backend), the Secret's values, the pod's volumes
(directories of the run), its host name and its metrics port (several pods share this machine).
tests/deploy/test_k8s_worker_process.py starts the same container the same way, under a write audit.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import environment as env
from deploy import manifests

# What the image sets for every process: the Dockerfile's ENV lines (KEY=VALUE pairs).
IMAGE_ENVIRONMENT = dict(
    pair.split("=", 1)
    for line in (manifests.ROOT / "Dockerfile").read_text().splitlines()
    if line.startswith("ENV ")
    for pair in line.split()[1:]
)
# What the kubelet runs for each command name, here: this Python and the tools installed beside it.
LOCAL_COMMANDS = {
    "celery": [sys.executable, "-m", "celery"],
    "gunicorn": [str(Path(sys.executable).parent / "gunicorn")],
    "python": [sys.executable],
}
# The Secret's values, which the rendered manifest leaves empty or as placeholders.
SECRET_KEY = "live-run-secret-key-not-used-anywhere-else-0123456789"  # noqa: S105 - not a secret of anything


@dataclass
class Pod:
    """One pod's process and what the run knows of it."""

    name: str
    hostname: str
    process: subprocess.Popen
    probe_directory: Path
    started_at: float  # time.monotonic()
    ready_at: float | None = None
    terminating_since: float | None = None
    exited_at: float | None = None

    @property
    def is_ready(self) -> bool:
        """The readiness probe's file (ops/probes.py): present from worker_ready until shutdown begins."""
        return (self.probe_directory / "ready").exists()


@dataclass(frozen=True)
class Cluster:
    """What the cluster provides to every pod: its services' addresses and the mail server."""

    database_url: str
    broker_url: str
    sandbox_url: str
    mail_log: Path


class ManifestPods:
    """The pods of one container of the production overlay (`worker-orders`), each a process started here."""

    def __init__(
        self,
        *,
        container_name: str,
        processes: env.Processes,
        work_dir: Path,
        cluster: Cluster,
        experiment: dict[str, str] | None = None,
    ) -> None:
        """`experiment`: variables added to the manifest's for the run (none overrides one the manifest sets)."""
        rendering = manifests.render_overlay("production")
        (self.container,) = [item for item in manifests.containers(rendering) if item.name == container_name]
        self.manifest_environment = manifests.environment(
            self.container, rendering, fields={"status.podIP": "127.0.0.1"}
        )
        overridden = set(experiment or {}) & set(self.manifest_environment)
        if overridden:
            raise ValueError(f"the experiment would override the manifest's {sorted(overridden)}")
        self.experiment = experiment or {}
        self.processes = processes
        self.work_dir = work_dir
        self.cluster = cluster
        self.started = 0

    @property
    def grace_seconds(self) -> int:
        return int(self.container.pod.get("terminationGracePeriodSeconds", 30))

    def start(self) -> Pod:
        """Start one more pod: its volumes, its environment, the manifest's command with its own --hostname."""
        self.started += 1
        name = f"{self.container.name}-{self.started}"
        pod_directory = self.work_dir / name
        volumes = {path: pod_directory / "volumes" / path.lstrip("/") for path in self.container.mounts()}
        for directory in [*volumes.values(), pod_directory / "home"]:
            directory.mkdir(parents=True)
        environment = {key: on_volumes(value, volumes) for key, value in self.manifest_environment.items()}
        environment |= IMAGE_ENVIRONMENT | {
            "PATH": os.environ["PATH"],
            "HOME": str(pod_directory / "home"),
            "TMPDIR": str(volumes["/tmp"]),  # noqa: S108 - the pod's /tmp emptyDir
            "PYTHONPATH": str(manifests.ROOT),
            "DATABASE_URL": self.cluster.database_url,
            "REDIS_URL": self.cluster.broker_url,
            "PAYMENT_SANDBOX_REDIS_URL": self.cluster.sandbox_url,
            "SECRET_KEY": SECRET_KEY,
            "EMAIL_BACKEND": "bench.mail.RecordingBackend",
            "BENCH_MAIL_LOG": str(self.cluster.mail_log),
            "WORKER_METRICS_PORT": str(env.free_port()),
        }
        environment |= self.experiment
        command = [
            *LOCAL_COMMANDS[self.container.command[0]],
            *(on_volumes(argument, volumes) for argument in self.container.command[1:]),
        ]
        hostname = f"{name}@{socket.gethostname()}"
        if manifests.is_worker(self.container):
            command.append(f"--hostname={hostname}")  # each pod has a host name; processes here share one
        process = self.processes.start(command, environment=environment, name=name)
        return Pod(
            name=name,
            hostname=hostname,
            process=process,
            probe_directory=Path(environment.get("WORKER_PROBE_DIR", str(pod_directory / "no-probes"))),
            started_at=time.monotonic(),
        )

    def terminate(self, pod: Pod) -> None:
        """SIGTERM the pod's main process, as the kubelet does to PID 1; do not wait for it."""
        pod.terminating_since = time.monotonic()
        pod.process.send_signal(signal.SIGTERM)

    def reap(self, pod: Pod) -> bool:
        """For a terminating pod: True once it is gone, by itself or killed when its grace period ran out (then its
        whole process group, as the kubelet's SIGKILL of the container)."""
        within_grace = pod.terminating_since is None or time.monotonic() - pod.terminating_since < self.grace_seconds
        if pod.process.poll() is None and within_grace:
            return False
        pod.exited_at = time.monotonic()
        self.processes.stop(pod.process, grace=0)
        return True


def on_volumes(value: str, volumes: dict[str, Path]) -> str:
    """`value` (a variable or an argument such as `--dir=/tmp`) with a path on a pod volume moved to its directory."""
    prefix, separator, path = value.rpartition("=") if value.startswith("--") else ("", "", value)
    for mount, directory in volumes.items():
        if path == mount or path.startswith(f"{mount}/"):
            return f"{prefix}{separator}{directory}{path[len(mount) :]}"
    return value


def scale_down_victims(pods: list[Pod], count: int) -> list[Pod]:
    """The pods a ReplicaSet removes first when scaled down by `count`: not ready before ready, then the newest
    (controller.ActivePods: a pod ready for less time goes first)."""
    ranked = sorted(pods, key=lambda pod: (pod.ready_at is not None, -(pod.ready_at or pod.started_at)))
    return ranked[:count]
