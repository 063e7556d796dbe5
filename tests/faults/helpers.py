"""Real worker subprocesses on a Redis of the test's own, and the exact-once checks every fault test ends with.

Each worker runs `celery -A proj worker` in a process group of its own (bench.environment.Processes), against the
pytest test database, so a test can SIGKILL it, its pool child or its whole group, and nothing else. The workers
run with the broker timings the service ships (visibility timeout, worker registry heartbeat and TTL): a promise
about recovery time is proved with them; a test that shortens one says so.
"""

import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from analytics.models import Event
from bench.environment import Processes, RedisServer
from jobs import registry
from jobs.models import DeadLetter
from notifications.models import Notification
from orders.models import Order, OrderEvent
from orders.services import RequestedItem, place_order
from proj.celery import app as celery_app
from tests.helpers import wait_for
from tests.ops.helpers import worker_environment


@dataclass
class Worker:
    process: object  # subprocess.Popen
    name: str
    log_path: Path
    hostname: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def pool_children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_group(self) -> None:
        """SIGKILL the main process and its pool children at once, as the OOM killer or a lost node would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


class FaultEnvironment:
    """The processes, broker, payment ledger and mail log of one fault test."""

    def __init__(self, processes: Processes, work_dir: Path, *, broker: RedisServer, sandbox_url: str) -> None:
        self.processes = processes
        self.work_dir = work_dir
        self.broker = broker  # stop, kill or restart it in place: same port, same URL
        self.broker_url = broker.url
        self.sandbox_url = sandbox_url
        self.mail_log = work_dir / "mail.log"
        self._workers = 0
        self.workers: list[Worker] = []

    def worker_environment(self, **overrides: str) -> dict[str, str]:
        return worker_environment(
            **(
                {
                    "REDIS_URL": self.broker_url,
                    "PAYMENT_SANDBOX_REDIS_URL": self.sandbox_url,
                    # Every email is built as SMTP would and recorded as one line in a file all workers append to.
                    "EMAIL_BACKEND": "bench.mail.RecordingBackend",
                    "BENCH_MAIL_LOG": str(self.mail_log),
                    # SIGTERM starts Celery's cold shutdown, preceded by the soft shutdown (as in production).
                    "REMAP_SIGTERM": "SIGQUIT",
                    "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT": "3",
                    "LOG_FORMAT": "text",
                    "LOG_LEVEL": "INFO",
                    "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                }
                | overrides
            )
        )

    def start_worker(
        self, *, concurrency: int = 1, queues: str = "", include: str = "", wait: bool = True, **environment
    ) -> Worker:
        """A prefork worker consuming `queues` (by default every queue, or its WORKER_REGION's when the environment
        names one); by default, wait until it consumes."""
        self._workers += 1
        name = f"worker{self._workers}"
        hostname = f"{name}-{os.getpid()}@{socket.gethostname()}"
        command = [sys.executable, "-m", "celery", "-A", "proj", "worker", "--pool", "prefork"]
        command += ["--concurrency", str(concurrency), "--hostname", hostname]
        if queues:
            command += ["--queues", queues]
        command += ["--loglevel", "INFO", "--without-mingle", "--without-gossip"]
        if include:
            command += ["--include", include]
        process = self.processes.start(command, environment=self.worker_environment(**environment), name=name)
        worker = Worker(process=process, name=name, log_path=self.work_dir / f"{name}.log", hostname=hostname)
        self.workers.append(worker)
        if wait:
            wait_for(
                lambda: "ready." in worker.log() or process.poll() is not None,
                timeout=60,
                message=f"{name} to be ready",
            )
            assert process.poll() is None, worker.log()
        return worker

    def broker_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.broker_url)

    def held_by(self, worker: Worker) -> dict[str, str]:
        """What the registry records the worker as holding: delivery tag -> queue."""
        held = self.broker_client().hgetall(registry.held_key(worker.hostname))
        return {tag.decode(): queue.decode() for tag, queue in held.items()}

    def logs(self) -> str:
        """Every worker's log so far, one after the other."""
        return "\n".join(worker.log() for worker in self.workers)

    def send(self, task_name: str, **kwargs) -> None:
        """Publish a task to the test's broker, as the outbox does (the router picks its queue)."""
        celery_app.send_task(task_name, kwargs=kwargs)

    def emails_by_recipient(self) -> Counter:
        """How many emails each address was sent (bench.mail.RecordingBackend: `time size recipients` lines)."""
        if not self.mail_log.exists():
            return Counter()
        return Counter(line.split()[2] for line in self.mail_log.read_text().splitlines())

    def charges(self) -> dict[str, str]:
        """The payment sandbox's ledger: idempotency key -> charge id."""
        ledger = redis.Redis.from_url(self.sandbox_url, decode_responses=True)
        keys = ledger.keys("sandbox:charge:*")
        return {key.removeprefix("sandbox:charge:"): json.loads(ledger.get(key))["id"] for key in keys}


def place_one(email: str, *, quantity: int = 2) -> Order:
    """An order of `quantity` MUG-001 (the test creates the product), paid with the card that succeeds."""
    return place_order(
        email=email, region="eu", items=[RequestedItem("MUG-001", quantity)], payment_token="tok_visa"
    ).order


def wait_until_processing(order: Order) -> None:
    """Bounded wait until a worker has moved the order to `processing` (it is then charging it)."""
    wait_for(
        lambda: Order.objects.filter(pk=order.pk, status=Order.Status.PROCESSING).exists(),
        timeout=30,
        message="the worker to start processing the order",
    )


def wait_for_orders(order_ids, *, statuses=("completed",), timeout: float, environment=None) -> None:
    """Bounded wait until every order is in one of `statuses`."""
    order_ids = [str(order_id) for order_id in order_ids]

    def done() -> bool:
        return Order.objects.filter(pk__in=order_ids, status__in=statuses).count() == len(order_ids)

    wait_for(done, timeout=timeout, interval=0.2, message=f"{len(order_ids)} orders to reach {statuses}")


def assert_completed_exactly_once(environment: FaultEnvironment, orders, *, emails_timeout: float = 30) -> None:
    """Each order completed, charged once (its reference is the ledger's only charge for it), one completed event,
    one confirmation notification sent and one email; and the ledger holds no charge of any other order."""
    orders = list(Order.objects.filter(pk__in=[order.pk for order in orders]))
    expected_emails = Counter({order.email: 1 for order in orders})
    wait_for(
        lambda: (
            environment.emails_by_recipient() == expected_emails
            or sum(environment.emails_by_recipient().values()) > len(orders)
        ),
        timeout=emails_timeout,
        message="one confirmation email per order",
    )
    # Anything still in flight would show up as a duplicate now, not after the test.
    time.sleep(1)
    ledger = environment.charges()
    charges = {key: charge for key, charge in ledger.items() if key in {f"order-{order.pk}" for order in orders}}

    assert {order.status for order in orders} == {Order.Status.COMPLETED}
    assert charges == {f"order-{order.pk}": order.payment_reference for order in orders}
    # Nothing else was charged: one charge per completed order in the database, under its own key.
    assert len(ledger) == Order.objects.filter(status=Order.Status.COMPLETED).count()
    assert environment.emails_by_recipient() == expected_emails
    completed_events = Counter(
        OrderEvent.objects.filter(order__in=orders, status=Order.Status.COMPLETED).values_list("order_id", flat=True)
    )
    assert completed_events == Counter({order.pk: 1 for order in orders})
    order_ids = [order.pk for order in orders]
    notifications = Notification.objects.filter(order_id__in=order_ids).values_list("order_id", "kind", "status")
    assert sorted(notifications) == sorted((order.pk, "order_confirmation", "sent") for order in orders)
    assert DeadLetter.objects.count() == 0


def assert_events_recorded_once(orders, *, event_type: str = "order_completed") -> None:
    """Analytics stored exactly one `event_type` event per order (events are relayed from the outbox)."""
    counts = Counter(
        Event.objects.filter(event_type=event_type, order_id__in=[order.pk for order in orders]).values_list(
            "order_id", flat=True
        )
    )
    assert counts == Counter({order.pk: 1 for order in orders})


def queue_lengths(environment: FaultEnvironment) -> dict[str, int]:
    """Messages waiting in the queue of EU orders (the fault tests' orders are EU ones), and messages delivered but not
    acknowledged, in the test's broker."""
    broker = redis.Redis.from_url(environment.broker_url)
    return {"orders": broker.llen("cloud.eu"), "unacked": broker.hlen("unacked")}
