"""Task activity, recorded where tasks run and served by each worker on its own port.

Task runtime, retries and failures happen in worker processes, which run in pods of their own. Each worker's main
process serves them on WORKER_METRICS_PORT (scrape each worker pod, e.g. with a PodMonitor); the prefork children
record into prometheus_client's multiprocess files in WORKER_METRICS_DIR, which the main process adds up. Their
names and labels are celery-exporter's (`celery_task_runtime`, `celery_task_failed_total`, ...), so `rate(...)`
summed over pods gives the cluster's figures.
"""

import os
import tempfile
import time
from pathlib import Path

from celery.utils import nodesplit
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

# Task runtimes: our tasks take milliseconds; the tail shows slow providers, up to the hard time limit (90 s).
TASK_RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 90.0)


class TaskMetrics:
    """Task counters and runtime, recorded by worker signal handlers in whichever process runs the task.

    Names and labels are celery-exporter's (it derives them from events; we record them where the task runs, so
    none is lost when an event is).
    """

    def __init__(self) -> None:
        labels = ["name", "hostname", "queue_name"]
        # Not registered in a registry: in multiprocess mode the values live in files the main process collects.
        self.started = Counter(
            "celery_task_started", "Task runs started by this worker's processes.", labels, registry=None
        )
        self.succeeded = Counter(
            "celery_task_succeeded", "Task runs that returned without an error.", labels, registry=None
        )
        self.failed = Counter(
            "celery_task_failed",
            "Task runs that raised an error and will not be retried.",
            ["name", "hostname", "exception", "queue_name"],
            registry=None,
        )
        self.retried = Counter(
            "celery_task_retried", "Task runs that failed and scheduled a retry.", labels, registry=None
        )
        self.runtime = Histogram(
            "celery_task_runtime",
            "Seconds each successful task run took.",
            labels,
            buckets=TASK_RUNTIME_BUCKETS,
            registry=None,
        )
        self._started_at: dict[str, float] = {}

    def task_started(self, task, task_id: str) -> None:
        self._started_at[task_id] = time.monotonic()
        self.started.labels(**_task_labels(task)).inc()

    def task_finished(self, task, task_id: str, state: str | None) -> None:
        started_at = self._started_at.pop(task_id, None)
        if state != "SUCCESS":
            return
        labels = _task_labels(task)
        self.succeeded.labels(**labels).inc()
        # As celery-exporter: the runtime of successful runs (a failure's runtime is mostly its timeout).
        if started_at is not None:
            self.runtime.labels(**labels).observe(time.monotonic() - started_at)

    def task_failed(self, task, exception: BaseException) -> None:
        self.failed.labels(**_task_labels(task), exception=type(exception).__name__).inc()

    def task_retried(self, task) -> None:
        self.retried.labels(**_task_labels(task)).inc()


def _task_labels(task) -> dict[str, str]:
    request = task.request
    delivery_info = request.delivery_info or {}
    # The host part of `celery@host`, as celery-exporter: one series per pod, not per process.
    _, hostname = nodesplit(request.hostname or "")
    # Our routing keys are the queue names (jobs/routing.py).
    return {"name": task.name, "hostname": hostname or "", "queue_name": delivery_info.get("routing_key") or ""}


def prepare_multiprocess_directory(directory: str) -> Path:
    """Clear (or create) the directory where worker processes write their metrics, and point prometheus_client at it.

    Runs in the worker's main process before the pool forks: files of an earlier run would add stale counts, and
    metrics created from now on, in this process and its children, write their values there. Only
    prometheus_client's own files (`*.db`) are removed, whatever else the directory holds.
    """
    path = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="worker-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    # prometheus_client picks its value class when first imported; choose the multiprocess one explicitly, so the
    # mode does not depend on whether something imported prometheus_client before this ran.
    values.ValueClass = values.MultiProcessValue()
    return path


def worker_registry() -> CollectorRegistry:
    """The registry a worker serves: the values all its processes wrote to the multiprocess directory."""
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry)
    return registry
