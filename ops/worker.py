"""What our Celery workers add to Celery: the registry heartbeat and reaper, probe files, a metrics endpoint, log
context around every task, and the thumbnail sandbox compiled in each pool process of the heavy pool.

`install(app)` (called by proj/celery.py) adds the worker bootsteps and connects the signal handlers. Every worker
heartbeats to the registry and reaps dead workers' messages (jobs/registry.py); probes and metrics are off unless
configured (WORKER_PROBE_DIR, WORKER_METRICS_PORT), so a worker started by a test or a shell session neither
writes probe files nor binds a port.
"""

import dataclasses
import logging
import logging.config
import os
import signal
import socket
import time
from typing import cast
from wsgiref.simple_server import WSGIServer

from celery import Celery, bootsteps, current_app, signals
from celery.worker import state as worker_state
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from kombu import Connection
from prometheus_client import start_http_server

from core.logging import bind_task_context, clear_task_context
from jobs import broker, registry, routing
from ops import task_metrics
from ops.probes import ProbeFiles

logger = logging.getLogger(__name__)

# The queue of the thumbnail task: a worker that consumes it compiles the sandbox in each pool process at start.
THUMBNAIL_QUEUE = routing.CENTRAL_QUEUE_BY_TASK["orders.make_thumbnail"]

# The probe files of this worker process, when probes are on (set by ProbeStep, read by the signal handlers).
_probe_files: ProbeFiles | None = None
# Task metrics of this worker, when its metrics endpoint is on; prefork children inherit it.
_task_metrics: task_metrics.TaskMetrics | None = None
# The registry step of this worker process, for the SIGTERM hook.
_registry_step: "RegistryStep | None" = None


class ProbeStep(bootsteps.StartStopStep):
    """Keeps the heartbeat file fresh from the worker's event loop.

    The timer is the one the event loop (kombu's hub) fires, so the heartbeat stops when the loop stops turning.
    Starts before the consumer step, which blocks while it consumes.
    """

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.timer_entry = None

    def include_if(self, worker) -> bool:
        return bool(settings.WORKER_PROBE_DIR)

    def create(self, worker):
        global _probe_files
        _probe_files = ProbeFiles(settings.WORKER_PROBE_DIR)
        _probe_files.prepare()
        # Not connected yet: the consumer starts after this step and may wait for the broker.
        _probe_files.mark_connecting()

    def start(self, worker) -> None:
        files = cast(ProbeFiles, _probe_files)  # made by create(), which runs first
        files.beat()
        self.timer_entry = worker.timer.call_repeatedly(
            settings.WORKER_HEARTBEAT_INTERVAL_SECONDS, files.beat, priority=10
        )

    def stop(self, worker) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    terminate = stop


class RegistryStep(bootsteps.StartStopStep):
    """Heartbeats to the worker registry and reaps the messages of dead workers, from the event loop's timer.

    Main process only (the pool's children neither consume nor hold messages). A heartbeat or a reap that fails
    (Redis away) is logged and tried again at the next tick: missing a few is what the TTL allows.
    """

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.timer_entry = None
        self.connection = None
        self.worker = worker
        self.info: registry.WorkerInfo | None = None

    def start(self, worker) -> None:
        global _registry_step
        _registry_step = self
        self.info = registry.WorkerInfo(
            hostname=worker.hostname,
            queues=self.consumed_queues(),
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=time.time(),
        )
        registry.set_holder(worker.hostname)
        # A connection of its own, with the short publish timeouts (proj/celery.py): a hung Redis delays the event
        # loop by at most BROKER_PUBLISH_TIMEOUT_SECONDS per command, never by the consumers' socket timeout.
        self.connection = worker.app.connection_for_write()
        self.tick()
        self.timer_entry = worker.timer.call_repeatedly(
            settings.WORKER_HEARTBEAT_INTERVAL_SECONDS, self.tick, priority=5
        )

    def tick(self, *, ttl: float | None = None) -> None:
        info = cast(registry.WorkerInfo, self.info)  # both set by start(), before the first tick
        connection = cast(Connection, self.connection)
        try:
            channel = cast(broker.Channel, connection.default_channel)
            live = dataclasses.replace(info, queues=self.consumed_queues(), active=len(worker_state.active_requests))
            registry.heartbeat(channel.client, live, ttl=ttl or settings.WORKER_REGISTRY_TTL_SECONDS)
            registry.reap_dead_workers(channel)
            routing.move_stranded_messages(channel)
        except Exception:
            logger.warning("Worker registry heartbeat or reap failed; trying again in %s s",
                           settings.WORKER_HEARTBEAT_INTERVAL_SECONDS, exc_info=True)  # fmt: skip

    def consumed_queues(self) -> tuple[str, ...]:
        """The queues the worker consumes now (control commands can add and cancel them), else those it was given."""
        consumer = getattr(self.worker, "consumer", None)
        task_consumer = getattr(consumer, "task_consumer", None)
        if task_consumer is not None:
            return tuple(sorted(queue.name for queue in task_consumer.queues))
        return tuple(sorted(self.worker.app.amqp.queues.consume_from or self.worker.app.amqp.queues))

    def reclaim_orphans(self, consumer) -> None:
        """The consumer (re)connected: messages recorded as held by this worker but not delivered on its new
        channel were held on a connection it lost (or by an earlier process of the same name): put them back."""
        connection = cast(Connection, self.connection)
        delivered = set(consumer.task_consumer.channel.qos._delivered)
        try:
            registry.reclaim_orphans(
                cast(broker.Channel, connection.default_channel), hostname=consumer.hostname, keep=delivered
            )
        except Exception:
            logger.warning("Could not put back the messages held on a lost connection; the visibility timeout will",
                           exc_info=True)  # fmt: skip

    def draining(self) -> None:
        """SIGTERM: the event loop may now be held for the whole soft shutdown (Celery sleeps through it): vouch for
        this worker that long, so the others do not take back the tasks it is finishing."""
        self.tick(ttl=settings.CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT + settings.WORKER_REGISTRY_TTL_SECONDS)

    def stop(self, worker) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None
        if self.connection is not None and self.info is not None:
            try:
                registry.leave(cast(broker.Channel, self.connection.default_channel).client, self.info.hostname)
            except Exception:
                logger.warning("Could not leave the worker registry; the other workers will reap", exc_info=True)
            self.connection.release()
            self.connection = None
        registry.set_holder(None)

    terminate = stop


class ReclaimStep(bootsteps.StartStopStep):
    """Consumer step: once the task consumer is (re)connected, and before the event loop delivers anything on it,
    what this worker held on a lost connection goes back to the queues (RegistryStep.reclaim_orphans)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, consumer) -> None:
        if _registry_step is not None and consumer.task_consumer is not None:
            _registry_step.reclaim_orphans(consumer)


class BrokerConnectionProbeStep(bootsteps.StartStopStep):
    """Consumer step: clears the `connecting` mark once connected, sets it again when the connection is lost.

    Celery restarts the consumer's steps (calling `stop`) after a connection loss and starts them again, after
    the Connection step, once the broker is back.
    """

    requires = ("celery.worker.consumer:Connection",)

    def include_if(self, consumer) -> bool:
        return bool(settings.WORKER_PROBE_DIR)

    def start(self, consumer) -> None:
        if _probe_files is not None:
            _probe_files.mark_connected()

    def stop(self, consumer) -> None:
        if _probe_files is not None:
            _probe_files.mark_connecting()

    def shutdown(self, consumer) -> None:
        """Shutting down is not a lost connection: leave the marks to the shutdown signals."""


class MetricsStep(bootsteps.StartStopStep):
    """Serves the task metrics of all the worker's processes on WORKER_METRICS_PORT (main process only).

    Created before the pool forks, so the children inherit the multiprocess set-up and the metric objects; started
    after the pool, so the children do not inherit a thread serving HTTP.
    """

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.server: WSGIServer | None = None

    def include_if(self, worker) -> bool:
        return bool(settings.WORKER_METRICS_PORT)

    def create(self, worker):
        global _task_metrics
        directory = task_metrics.prepare_multiprocess_directory(settings.WORKER_METRICS_DIR)
        _task_metrics = task_metrics.TaskMetrics()
        logger.info("Worker metrics: processes write to %s", directory)

    def start(self, worker) -> None:
        self.server, _thread = start_http_server(
            settings.WORKER_METRICS_PORT, addr=settings.WORKER_METRICS_ADDRESS, registry=task_metrics.worker_registry()
        )
        logger.info("Worker metrics on %s:%s/metrics", settings.WORKER_METRICS_ADDRESS, settings.WORKER_METRICS_PORT)

    def stop(self, worker) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    terminate = stop


def _consume_the_worker_region(instance=None, options=None, **kwargs) -> None:
    """`celery worker` with WORKER_REGION and no --queues: consume exactly that region's queue (or the public
    pool's). Both at once would be two answers to one question: refused."""
    if not settings.WORKER_REGION:
        return
    if (options or {}).get("queues"):
        raise ImproperlyConfigured("Give a worker WORKER_REGION or --queues, not both.")
    queues = routing.queues_of_worker_region(settings.WORKER_REGION)
    instance.app.amqp.queues.select(queues)
    logger.info("WORKER_REGION=%s: consuming %s", settings.WORKER_REGION, ", ".join(queues))


def _use_django_logging(loglevel=None, **kwargs) -> None:
    """Configure the worker's logging from Django's LOGGING instead of Celery's own format (JSON in production)."""
    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)


def _on_worker_ready(**kwargs) -> None:
    if _probe_files is not None:
        _probe_files.mark_ready()
    _withdraw_at_sigterm()


def _withdraw_at_sigterm() -> None:
    """On SIGTERM, before Celery's handler runs: not ready any more, and vouched for through the soft shutdown.

    With REMAP_SIGTERM=SIGQUIT, Celery's handler sleeps through the soft shutdown before `worker_shutting_down`
    is sent, so the readiness and registry hooks below would come 25 s late. Celery has installed its handlers by
    `worker_ready`; this one wraps the main process's.
    """
    celery_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame) -> None:
        if _probe_files is not None:
            _probe_files.mark_not_ready()
        if _registry_step is not None:
            _registry_step.draining()
        if callable(celery_handler):
            celery_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def _on_worker_shutting_down(**kwargs) -> None:
    # SIGTERM: stop counting as available at once, while running tasks finish (Celery's warm shutdown).
    if _probe_files is not None:
        _probe_files.mark_not_ready()


def _on_worker_shutdown(**kwargs) -> None:
    if _probe_files is not None:
        _probe_files.clear()


def _prepare_thumbnail_sandbox(**kwargs) -> None:
    """In each prefork pool process (worker_process_init: after the fork, never in the parent) of a worker that
    consumes the heavy queue: compile the sandbox's engine and module now, so the first image does not pay for it.

    Compiling before the fork would deadlock the children (core/sandbox.py). A missing module is logged, not
    raised: the process stays up, and each thumbnail task fails with the same message and is dead-lettered.
    """
    if THUMBNAIL_QUEUE not in current_app.amqp.queues.consume_from:
        return
    # Imported here: the apps are loaded by now, not when proj/celery.py imports this module.
    from core.sandbox import SandboxUnavailable
    from orders.catalog import prepare_thumbnail_sandbox

    started = time.monotonic()
    try:
        prepare_thumbnail_sandbox()
    except SandboxUnavailable as error:
        logger.error("Thumbnail sandbox unavailable in pool process %d: %s", os.getpid(), error)
        return
    logger.info("Thumbnail sandbox ready in pool process %d (%.2f s)", os.getpid(), time.monotonic() - started)


def _on_task_prerun(task_id=None, task=None, kwargs=None, **extra) -> None:
    order_id = (kwargs or {}).get("order_id")
    bind_task_context(task_id=task_id, task_name=task.name, order_id=str(order_id) if order_id else None)
    if _task_metrics is not None:
        _task_metrics.task_started(task, task_id)


def _on_task_postrun(task_id=None, task=None, state=None, **extra) -> None:
    if _task_metrics is not None:
        _task_metrics.task_finished(task, task_id, state)
    clear_task_context()


def _on_task_failure(sender=None, exception=None, **extra) -> None:
    if _task_metrics is not None:
        _task_metrics.task_failed(sender, exception)


def _on_task_retry(sender=None, **extra) -> None:
    if _task_metrics is not None:
        _task_metrics.task_retried(sender)


def install(app: Celery) -> None:
    """Add the worker steps to `app` and connect the handlers (module-level functions: weak references hold)."""
    app.steps["worker"].update({RegistryStep, ProbeStep, MetricsStep})
    app.steps["consumer"].update({ReclaimStep, BrokerConnectionProbeStep})
    signals.setup_logging.connect(_use_django_logging)
    signals.celeryd_init.connect(_consume_the_worker_region)
    signals.worker_ready.connect(_on_worker_ready)
    signals.worker_shutting_down.connect(_on_worker_shutting_down)
    signals.worker_shutdown.connect(_on_worker_shutdown)
    signals.worker_process_init.connect(_prepare_thumbnail_sandbox)
    signals.task_prerun.connect(_on_task_prerun)
    signals.task_postrun.connect(_on_task_postrun)
    signals.task_failure.connect(_on_task_failure)
    signals.task_retry.connect(_on_task_retry)
