"""The profiled processes of `python -m bench profile`, instrumented from inside (run by the harness, not by hand).

    python -m bench.profiled place --orders N --report place.json   places N orders one after the other
    python -m bench.profiled work --report work.json                a solo-pool worker until SIGTERM

Both run pyinstrument on the main thread, count every SQL statement (by task, or "placement") through a Django
execute wrapper, and count Redis round trips (one per command sent, one per pipeline) by task and by server.
"""

import argparse
import json
import random
import re
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import django

# Table names are lower case; "FOR UPDATE OF", "SKIP LOCKED" and "DO UPDATE SET" are not tables.
TABLE = re.compile(r'\b(?i:FROM|INTO|UPDATE|JOIN)\s+"?([a-z_][a-z0-9_]*)"?')
# Coarse enough that writing out a minute-long worker session takes seconds, not minutes.
PROFILER_INTERVAL_SECONDS = 0.001
TASK_BODIES = {
    "process_order_task": "orders.process_order",
    "send_notification_task": "notifications.send_notification",
    "track_events_task": "analytics.track_events",
    "relay_outbox_task": "jobs.relay_outbox",
    "noop_task": "bench.noop",
}
# A rule matches a frame whose file path contains one of `paths` and, if `functions` is given, whose function is
# one of them.
Rule = tuple[str, tuple[str, ...], tuple[str, ...] | None]
# Exclusive buckets of the worker's main thread, first match wins walking down from the root.
PARTITION: tuple[Rule, ...] = (
    ("waiting for messages (idle)", ("kombu/utils/eventio.py",), None),
    ("task bodies", ("",), tuple(TASK_BODIES)),
    ("result backend (store result)", ("celery/backends/", "django_celery_results"), None),
)
# Inclusive totals, wherever they happen (a match is not searched again inside itself).
CROSS_CUTTING: tuple[Rule, ...] = (
    ("SQL statements (Django cursor execute)", ("django/db/backends/utils.py",), ("execute", "executemany")),
    ("commits", ("django/db/backends/base/base.py",), ("commit",)),
    ("Redis I/O (redis-py)", ("redis/connection.py", "redis/_parsers"), None),
    ("message (de)serialization", ("kombu/serialization.py", "kombu/utils/json.py"), None),
    ("task events (celery.events)", ("celery/events/",), None),
    ("logging", ("logging/__init__.py",), None),
    ("payment sandbox charge", ("orders/payments.py",), ("charge",)),
    ("templates and email building", ("django/template/", "django/core/mail/"), None),
)


def _matches(rule: Rule, path: str, function: str) -> bool:
    _, paths, functions = rule
    return any(part in path for part in paths) and (functions is None or function in functions)


class Counters:
    """SQL statements and Redis round trips, attributed to what the thread is doing (a task, or else)."""

    def __init__(self, idle_label: str) -> None:
        self.local = threading.local()
        self.idle_label = idle_label
        self.statements: dict[str, Counter] = defaultdict(Counter)
        self.round_trips: dict[str, Counter] = defaultdict(Counter)
        self.executions: Counter = Counter()

    @property
    def label(self) -> str:
        return getattr(self.local, "label", self.idle_label)

    @label.setter
    def label(self, value: str) -> None:
        self.local.label = value

    def sql(self, execute, sql, params, many, context):
        kind = sql.lstrip().split(None, 1)[0].upper()
        tables = "+".join(dict.fromkeys(TABLE.findall(sql))) or "-"
        label = "result backend" if "django_celery_results" in sql else self.label
        self.statements[label][f"{kind} {tables}"] += 1
        return execute(sql, params, many, context)

    def install(self) -> None:
        import redis.connection
        from django.db import connection

        connection.execute_wrappers.append(self.sql)
        original = redis.connection.AbstractConnection.send_packed_command
        counters = self

        def send_packed_command(connection_self, command, check_health=True):
            server = "broker" if getattr(connection_self, "db", 0) == 0 else "payment sandbox"
            counters.round_trips[counters.label][server] += 1
            return original(connection_self, command, check_health)

        redis.connection.AbstractConnection.send_packed_command = send_packed_command

    def as_json(self) -> dict:
        return {
            "statements": {label: dict(counts) for label, counts in self.statements.items()},
            "round_trips": {label: dict(counts) for label, counts in self.round_trips.items()},
            "executions": dict(self.executions),
        }


def time_buckets(session) -> dict:
    """Seconds of the main thread per exclusive bucket, and per cross-cutting cost."""
    partition: Counter = Counter()
    cross: Counter = Counter()

    def walk_partition(frame) -> None:
        path, function = frame.file_path or "", frame.function or ""
        for rule in PARTITION:
            name = rule[0]
            if _matches(rule, path, function):
                partition[name] += frame.time
                if name == "task bodies":
                    partition[f"task body: {TASK_BODIES[function]}"] += frame.time
                return
        own = frame.time - sum(child.time for child in frame.children)
        partition["Celery and kombu machinery (the rest)"] += own
        for child in frame.children:
            walk_partition(child)

    def walk_cross(frame) -> None:
        path, function = frame.file_path or "", frame.function or ""
        for rule in CROSS_CUTTING:
            name = rule[0]
            if _matches(rule, path, function):
                cross[name] += frame.time
                return
        for child in frame.children:
            walk_cross(child)

    root = session.root_frame()
    if root is not None:
        walk_partition(root)
        walk_cross(root)
    return {
        "total": session.duration,
        "cpu": session.cpu_time,
        "partition": dict(partition),
        "cross_cutting": dict(cross),
    }


def _write(report: Path, counters: Counters, profiler, extra: dict) -> None:
    session = profiler.last_session
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    report.with_suffix(".txt").write_text(text)
    report.write_text(json.dumps(counters.as_json() | {"time": time_buckets(session)} | extra))


def place(orders: int, report: Path, *, via_api: bool) -> None:
    """Place `orders` orders one after the other: through the API (Django's test client, in this process, so the
    view, idempotency and the response are included) when it is there, else by calling the service."""
    from pyinstrument import Profiler

    from bench.placement import order_payload
    from orders.models import Product

    counters = Counters("placement")
    skus = list(Product.objects.order_by("sku").values_list("sku", flat=True))
    place_one = _api_placer() if via_api else _service_placer()
    counters.install()
    chooser = random.Random(1)
    durations = []
    profiler = Profiler(interval=PROFILER_INTERVAL_SECONDS, async_mode="disabled")
    profiler.start()
    for index in range(orders):
        payload = order_payload(index, skus, chooser)
        started = time.perf_counter()
        place_one(payload)
        durations.append(time.perf_counter() - started)
    profiler.stop()
    counters.executions["placement"] = orders
    _write(report, counters, profiler, {"durations": durations, "via": "api" if via_api else "service"})


def _api_placer():
    import uuid

    from django.test import Client

    client = Client()

    def place_one(payload: dict) -> None:
        response = client.post(
            "/api/orders", payload, content_type="application/json", headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        if response.status_code != 201:
            raise RuntimeError(f"POST /api/orders answered {response.status_code}: {response.content[:300]!r}")

    return place_one


def _service_placer():
    from orders.services import RequestedItem, place_order

    def place_one(payload: dict) -> None:
        items = [RequestedItem(item["sku"], item["quantity"]) for item in payload.pop("items")]
        place_order(items=items, **payload)

    return place_one


def work(report: Path, *, queues: str, relay_interval: float) -> None:
    """A solo-pool worker (all work in this main thread) with the production settings, until SIGTERM.

    A thread sends `jobs.relay_outbox` every `relay_interval` seconds, which is all beat does for the pipeline.
    """
    from celery import signals
    from pyinstrument import Profiler

    from jobs.tasks import relay_outbox_task
    from proj.celery import app

    counters = Counters("worker between tasks")
    counters.install()

    @signals.task_prerun.connect(weak=False)
    def started(task=None, **kwargs) -> None:
        counters.label = task.name

    @signals.task_postrun.connect(weak=False)
    def finished(task=None, **kwargs) -> None:
        counters.executions[task.name] += 1
        counters.label = counters.idle_label

    stop = threading.Event()

    def beat() -> None:
        counters.label = "beat (relay ticks)"
        while not stop.wait(relay_interval):
            relay_outbox_task.apply_async()

    threading.Thread(target=beat, daemon=True).start()
    profiler = Profiler(interval=PROFILER_INTERVAL_SECONDS, async_mode="disabled")

    @signals.worker_ready.connect(weak=False)
    def ready(**kwargs) -> None:
        profiler.start()  # the worker's startup is not the order path

    try:
        app.worker_main(["worker", "--pool", "solo", *(["--queues", queues] if queues else []),
                         "--exclude-queues", "heavy", "--loglevel", "INFO"])  # fmt: skip
    finally:
        stop.set()
        profiler.stop()
        _write(report, counters, profiler, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("place", "work"))
    parser.add_argument("--orders", type=int, default=0)
    parser.add_argument("--via-api", action="store_true", help="place through POST /api/orders (test client)")
    parser.add_argument("--queues", default="", help="queues to consume (default: every one but heavy)")
    parser.add_argument("--relay-interval", type=float, default=2.0)
    parser.add_argument("--report", type=Path, required=True)
    arguments = parser.parse_args()
    django.setup()
    if arguments.what == "place":
        place(arguments.orders, arguments.report, via_api=arguments.via_api)
    else:
        work(arguments.report, queues=arguments.queues, relay_interval=arguments.relay_interval)


if __name__ == "__main__":
    main()
