"""The pipeline's state on the web app's `/metrics` (task activity is each worker's: ops/task_metrics.py).

The web app's `/metrics` reads everything at scrape time from PostgreSQL and Redis (`read_pipeline_snapshot`).
No number lives in a web process, so every gunicorn worker and every web replica answers with the same values,
without prometheus_client's multiprocess mode. `celery_queue_length{queue_name}`, the autoscaler's metric, has the
name and label of danihodovic/celery-exporter, so its dashboards and alert rules work unchanged. With several web
replicas each one reports the same cluster-wide values: aggregate with `max`, not `sum`.

The ops page (`/ops/`) draws from `read_pipeline_snapshot` as well, so it shows the numbers Prometheus sees.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from celery.utils import nodesplit
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from jobs import selectors as job_selectors
from jobs.selectors import ConsumerBacklog, OutboxBacklog, WorkerOverview
from orders import selectors as order_selectors
from orders.selectors import LatencyHistogram

logger = logging.getLogger(__name__)

# Placement-to-final time of an order: seconds when all is well, minutes when the payment provider is slow and
# retries back off, up to an hour or more when an order waited for a stuck-order reconciliation or an operator.
ORDER_LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


@dataclass(frozen=True)
class PipelineSnapshot:
    """What the pipeline looks like now. A part is None when its source (Redis, PostgreSQL) could not be read."""

    queue_lengths: dict[str, int] | None
    workers: WorkerOverview | None
    outbox: dict[str, OutboxBacklog] | None
    dead_letters: dict[str, int] | None
    orders_by_status: dict[str, int] | None
    order_latency: dict[str, LatencyHistogram] | None
    # Events each outbox consumer (analytics, the export) has not confirmed yet.
    event_consumers: dict[str, ConsumerBacklog] | None

    @property
    def sources_up(self) -> dict[str, bool]:
        return {"redis": self.queue_lengths is not None, "database": self.orders_by_status is not None}


def read_pipeline_snapshot() -> PipelineSnapshot:
    """Read the numbers behind `/metrics` and the ops page; an unreachable source leaves its parts empty."""
    queue_lengths: dict[str, int] | None
    workers: WorkerOverview | None
    try:
        queue_lengths = job_selectors.get_queue_lengths()
        workers = job_selectors.get_worker_overview()
    except Exception:  # any broker failure: report the broker down, serve the rest
        logger.warning("Metrics could not read the queue lengths and workers from the broker.", exc_info=True)
        queue_lengths = workers = None
    outbox: dict[str, OutboxBacklog] | None
    dead_letters: dict[str, int] | None
    orders_by_status: dict[str, int] | None
    order_latency: dict[str, LatencyHistogram] | None
    event_consumers: dict[str, ConsumerBacklog] | None
    try:
        outbox = job_selectors.get_outbox_backlog()
        event_consumers = job_selectors.get_event_backlog_by_consumer()
        dead_letters = job_selectors.count_dead_letters()
        orders_by_status = order_selectors.count_orders_by_status()
        order_latency = order_selectors.get_placement_to_final_latency(bounds=ORDER_LATENCY_BUCKETS)
    except Exception:  # any database failure: report the database down, serve the rest
        logger.warning("Metrics could not read the database.", exc_info=True)
        outbox = dead_letters = orders_by_status = order_latency = event_consumers = None
    return PipelineSnapshot(
        queue_lengths=queue_lengths,
        workers=workers,
        outbox=outbox,
        dead_letters=dead_letters,
        orders_by_status=orders_by_status,
        order_latency=order_latency,
        event_consumers=event_consumers,
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

        if snapshot.workers is not None:
            yield from _worker_families(snapshot.workers)

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

        if snapshot.event_consumers is not None:
            unconfirmed = GaugeMetricFamily(
                "shop_outbox_unconfirmed_events",
                "Events a consumer has not confirmed: not sent yet, or sent and awaiting its receipt.",
                labels=["consumer"],
            )
            oldest_unconfirmed = GaugeMetricFamily(
                "shop_outbox_oldest_unconfirmed_event_age_seconds",
                "Age of the oldest event a consumer has not confirmed; 0 when none waits.",
                labels=["consumer"],
            )
            for consumer, consumer_backlog in snapshot.event_consumers.items():
                unconfirmed.add_metric([consumer], consumer_backlog.unconfirmed)
                oldest_unconfirmed.add_metric([consumer], consumer_backlog.oldest_age_seconds)
            yield unconfirmed
            yield oldest_unconfirmed

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


def _worker_families(overview: WorkerOverview) -> Iterator[GaugeMetricFamily]:
    """The worker registry's numbers, with celery-exporter's names where it has them."""
    in_flight = GaugeMetricFamily(
        "shop_queue_messages_in_flight",
        "Messages workers have taken from the queue and not acknowledged yet (running, prefetched, waiting for an "
        "ETA); a dead worker's count until they are back in the queue.",
        labels=["queue_name"],
    )
    consumers = GaugeMetricFamily(
        "celery_active_worker_count", "Live workers consuming the queue.", labels=["queue_name"]
    )
    for queue, count in overview.in_flight.items():
        in_flight.add_metric([queue], count)
    for queue, count in overview.consumers.items():
        consumers.add_metric([queue], count)
    # By the host part of `celery@host`, as celery-exporter and the task metrics: one series per pod.
    up: dict[str, int] = {}
    active: dict[str, int] = {}
    for status in overview.workers:
        _, host = nodesplit(status.hostname)
        up[host] = max(up.get(host, 0), int(status.is_alive))
        active[host] = active.get(host, 0) + (status.info.active if status.info is not None else 0)
    worker_up = GaugeMetricFamily(
        "celery_worker_up", "1 while the worker heartbeats, 0 once it stopped (listed a while).", labels=["hostname"]
    )
    tasks_active = GaugeMetricFamily("celery_worker_tasks_active", "Tasks the worker is running.", labels=["hostname"])
    for host in sorted(up):
        worker_up.add_metric([host], up[host])
        tasks_active.add_metric([host], active[host])
    yield from (in_flight, consumers, worker_up, tasks_active)


web_registry = CollectorRegistry(auto_describe=False)
web_registry.register(PipelineCollector())
