import contextlib
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import connection, connections

from jobs.routing import queue_names
from orders.payments import SandboxGateway, get_gateway
from proj.celery import app as celery_app
from tests.factories import ProductFactory
from tests.helpers import wait_for
from tests.ops.helpers import purge_queues
from tests.push_server import PushServer, start_push_server


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    yield
    # Worker threads keep their own connections open (as in production); end them so the test database can go.
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def sandbox() -> SandboxGateway:
    """The payment sandbox, with an empty ledger for each test."""
    gateway = get_gateway()
    gateway.redis.flushdb()
    return gateway


@pytest.fixture(autouse=True)
def empty_queues() -> None:
    """No message left over from an earlier test reaches this test's worker."""
    purge_queues()


@pytest.fixture(autouse=True)
def fresh_rate_limits(settings) -> None:
    """Rate-limit counters of this test only: earlier tests' requests do not count against it."""
    settings.RATE_LIMIT_KEY_PREFIX = f"test-ratelimit:{uuid.uuid4().hex}:"


def queue_length(name: str) -> int:
    with celery_app.connection_for_write() as broker:
        return broker.default_channel.client.llen(name)


@contextlib.contextmanager
def project_worker() -> Iterator:
    """A real Celery worker (4 threads) consuming this project's queues from real Redis, in this process, once it
    answers control messages; it is stopped on leaving.

    Celery's test worker says it started before its event loop subscribed to the control channel: a broadcast sent
    in between (Redis pub/sub keeps nothing for absent subscribers) is lost, and the worker never answers it. So
    wait until it answers a ping, as a client of a real deployment would see it.
    """
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        queues=list(queue_names()),
        perform_ping_check=False,
        shutdown_timeout=30,
        loglevel="WARNING",
    ) as worker:
        wait_for(
            lambda: celery_app.control.ping(destination=[worker.hostname], timeout=0.5),
            timeout=30,
            interval=0,
            message="the test worker to answer control messages",
        )
        yield worker


@pytest.fixture
def celery_worker(transactional_db) -> Iterator:
    """A worker of `project_worker()` for the whole test."""
    with project_worker() as worker:
        yield worker


@pytest.fixture
def push_server(settings) -> Iterator[PushServer]:
    """A real HTTP push server on a free port, with PUSH_URL pointing at it."""
    state, server = start_push_server()
    settings.PUSH_URL = state.url
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def thumbnail_module() -> None:
    """The thumbnail sandbox's real module, built (or found up to date) by bin/build-wasm, as `make test` does first."""
    build = subprocess.run(
        [Path(__file__).resolve().parent.parent / "bin" / "build-wasm"], capture_output=True, text=True, check=False
    )
    if build.returncode != 0:
        pytest.fail(f"bin/build-wasm failed:\n{build.stderr}")


@pytest.fixture
def media_root(settings, tmp_path) -> Path:
    """Product images and thumbnails of this test only (MEDIA_ROOT), so a test can list exactly what was stored."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def product():
    return ProductFactory(sku="MUG-001", name="Mug", stock=10)


def run_in_threads(count: int, target) -> list:
    """Run `target(index)` in `count` threads started together; return their results (or exceptions)."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = target(index)
        except Exception as error:  # noqa: BLE001 - handed to the test, which asserts on it
            results[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results
