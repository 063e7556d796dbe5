"""Prometheus metrics: the pipeline's state on the web app's `/metrics`, task activity on each worker's own port.

Where each number is exposed, and why:

- The web app's `/metrics` reads everything at scrape time from PostgreSQL and Redis (`read_pipeline_snapshot`).
  No number lives in a web process, so every gunicorn worker and every web replica answers with the same values,
  without prometheus_client's multiprocess mode. `celery_queue_length{queue_name}`, the autoscaler's metric, has
  the name and label of danihodovic/celery-exporter, so its dashboards and alert rules work unchanged. With several
  web replicas each one reports the same cluster-wide values: aggregate with `max`, not `sum`.
- Task runtime, retries and failures happen in worker processes, which run in pods of their own. Each worker's
  main process serves them on WORKER_METRICS_PORT (scrape each worker pod, e.g. with a PodMonitor); the prefork
  children record into prometheus_client's multiprocess files in WORKER_METRICS_DIR, which the main process adds
  up. Their names and labels are celery-exporter's too (`celery_task_runtime`, `celery_task_failed_total`, ...),
  so `rate(...)` summed over pods gives the cluster's figures.

The ops page (`/ops/`) draws from `read_pipeline_snapshot` as well, so it shows the numbers Prometheus sees.
"""

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from celery.utils import nodesplit
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from jobs import selectors as job_selectors
from jobs.selectors import OutboxBacklog
from orders import selectors as order_selectors
from orders.selectors import LatencyHistogram

logger = logging.getLogger(__name__)

# Placement-to-final time of an order: seconds when all is well, minutes when the payment provider is slow and
# retries back off, up to an hour or more when an order waited for a stuck-order reconciliation or an operator.
ORDER_LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
# Task runtimes: our tasks take milliseconds; the tail shows slow providers, up to the hard time limit (90 s).
TASK_RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 90.0)


# --- The pipeline's state (web) ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineSnapshot:
    """What the pipeline looks like now. A part is None when its source (Redis, PostgreSQL) could not be read."""

    queue_lengths: dict[str, int] | None
    outbox: dict[str, OutboxBacklog] | None
    dead_letters: dict[str, int] | None
    orders_by_status: dict[str, int] | None
    order_latency: dict[str, LatencyHistogram] | None

    @property
    def sources_up(self) -> dict[str, bool]:
        return {"redis": self.queue_lengths is not None, "database": self.orders_by_status is not None}


def read_pipeline_snapshot() -> PipelineSnapshot:
    """Read the numbers behind `/metrics` and the ops page; an unreachable source leaves its parts empty."""
    try:
        queue_lengths = job_selectors.get_queue_lengths()
    except Exception:  # any broker failure: report the broker down, serve the rest
        logger.warning("Metrics could not read the queue lengths from the broker.", exc_info=True)
        queue_lengths = None
    try:
        outbox = job_selectors.get_outbox_backlog()
        dead_letters = job_selectors.count_dead_letters()
        orders_by_status = order_selectors.count_orders_by_status()
        order_latency = order_selectors.get_placement_to_final_latency(bounds=ORDER_LATENCY_BUCKETS)
    except Exception:  # any database failure: report the database down, serve the rest
        logger.warning("Metrics could not read the database.", exc_info=True)
        outbox = dead_letters = orders_by_status = order_latency = None
    return PipelineSnapshot(
        queue_lengths=queue_lengths,
        outbox=outbox,
        dead_letters=dead_letters,
        orders_by_status=orders_by_status,
        order_latency=order_latency,
    )


class PipelineCollector(Collector):
    """Turns a fresh `PipelineSnapshot` into metric families at every scrape."""

    def collect(self):
        snapshot = read_pipeline_snapshot()
        up = GaugeMetricFamily(
            "shop_metrics_source_up",
            "Whether this scrape could read the source (1) or not (0); its metrics are missing while it is 0.",
            labels=["source"],
        )
        for source, is_up in snapshot.sources_up.items():
            up.add_metric([source], 1 if is_up else 0)
        yield up

        if snapshot.queue_lengths is not None:
            queues = GaugeMetricFamily(
                "celery_queue_length",
                "Messages waiting in the broker queue, priority sub-queues included.",
                labels=["queue_name"],
            )
            for queue, length in snapshot.queue_lengths.items():
                queues.add_metric([queue], length)
            yield queues

        if snapshot.outbox is not None:
            unsent = GaugeMetricFamily(
                "shop_outbox_unsent_messages", "Outbox rows committed but not yet published, by kind.", labels=["kind"]
            )
            oldest = GaugeMetricFamily(
                "shop_outbox_oldest_unsent_age_seconds",
                "Age of the oldest unsent outbox row, by kind; 0 when none waits.",
                labels=["kind"],
            )
            for kind, backlog in snapshot.outbox.items():
                unsent.add_metric([kind], backlog.unsent)
                oldest.add_metric([kind], backlog.oldest_age_seconds)
            yield unsent
            yield oldest

        if snapshot.dead_letters is not None:
            dead_letters = GaugeMetricFamily(
                "shop_dead_letters", "Dead-lettered tasks, pending (awaiting ops) or replayed.", labels=["state"]
            )
            for state, count in snapshot.dead_letters.items():
                dead_letters.add_metric([state], count)
            yield dead_letters

        if snapshot.orders_by_status is not None:
            orders = GaugeMetricFamily("shop_orders", "Orders in each status.", labels=["status"])
            for status, count in snapshot.orders_by_status.items():
                orders.add_metric([status], count)
            yield orders

        if snapshot.order_latency is not None:
            latency = HistogramMetricFamily(
                "shop_order_placement_to_final_seconds",
                "Seconds from placing an order to its final status, by final status.",
                labels=["status"],
            )
            for status, histogram in snapshot.order_latency.items():
                buckets = [
                    (floatToGoString(bound), count)
                    for bound, count in zip(histogram.bounds, histogram.cumulative_counts, strict=True)
                ]
                buckets.append(("+Inf", histogram.count))
                latency.add_metric([status], buckets, histogram.sum_seconds)
            yield latency


web_registry = CollectorRegistry(auto_describe=False)
web_registry.register(PipelineCollector())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus' text format, read at scrape time from PostgreSQL and Redis."""
    return HttpResponse(generate_latest(web_registry), content_type=CONTENT_TYPE_LATEST)


# --- Task activity (worker) ----------------------------------------------------------------------------------------


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
    # Our routing keys are the queue names (proj/routing.py).
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
