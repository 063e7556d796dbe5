"""Builders and readers shared by the ops tests (and the fault tests' worker subprocesses)."""

import os
import socket
import subprocess
import threading
from contextlib import suppress
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from jobs import registry
from orders.models import Order, OrderEvent
from proj.celery import app as celery_app


def make_order(*, status: str, region: str = "eu", seconds_to_final: float | None = None, **fields) -> Order:
    """An order row in `status` with its timeline, placed an hour ago; final ones `seconds_to_final` later."""
    placed_at = timezone.now() - timedelta(hours=1)
    order = Order.objects.create(
        email=fields.pop("email", "ada@example.com"),
        region=region,
        status=status,
        total=fields.pop("total", Decimal("10.00")),
        currency="EUR",
        payment_token="tok_visa",
        **fields,
    )
    updated_at = placed_at + timedelta(seconds=seconds_to_final) if seconds_to_final is not None else placed_at
    Order.objects.filter(pk=order.pk).update(created_at=placed_at, updated_at=updated_at)
    OrderEvent.objects.create(order=order, status=Order.Status.PENDING)
    if status != Order.Status.PENDING:
        OrderEvent.objects.create(order=order, status=status, note=f"moved to {status}")
    order.refresh_from_db()
    return order


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted label pairs): value} of Prometheus text output."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def check_with_promtool(text: str) -> subprocess.CompletedProcess:
    """`promtool check metrics` on `text` (Debian package `prometheus`, listed in system-packages.txt)."""
    return subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url() -> str:
    database = settings.DATABASES["default"]
    return f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"


def worker_environment(**overrides: str) -> dict[str, str]:
    """The environment of a worker (or Flower) subprocess: test settings, on the pytest test database."""
    return os.environ | {"DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url()} | overrides


def purge_queues() -> None:
    """Empty the queues, kombu's unacknowledged messages and the worker registry of the test broker (the autouse
    `empty_queues` fixture, and a module-scoped worker that starts before it runs)."""
    with celery_app.connection_for_write() as broker:
        channel = broker.default_channel
        for queue in settings.CELERY_TASK_QUEUES:
            queue.bind(channel).purge()
        registry_keys = list(channel.client.scan_iter(match=f"{registry.KEY_PREFIX}*"))
        channel.client.delete("unacked", "unacked_index", *registry_keys)


class TcpProxy:
    """A local port forwarded to another: `cut()` drops every connection and refuses new ones, `restore()` heals.

    Lets a test take the broker away from one worker, as a network failure would, without touching the shared Redis.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def restore(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def cut(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for connection in self._connections:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _address = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._connections |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, destination: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                destination.sendall(data)
        with suppress(OSError):
            destination.shutdown(socket.SHUT_WR)
