"""Each fault test gets its own redis-servers (broker, payment ledger) and worker processes, all stopped after it.

The test process itself publishes to the test's broker too (placing orders, relaying the outbox), so the Celery
app is pointed at it for the duration of the test, and back afterwards.
"""

from collections.abc import Iterator

import pytest
from kombu import pools

# The checks in helpers.py report their values when they fail, as asserts in the tests do.
pytest.register_assert_rewrite("tests.faults.helpers")

from bench.environment import Processes, RedisServer  # noqa: E402
from proj.celery import app as celery_app  # noqa: E402
from tests.faults.helpers import FaultEnvironment  # noqa: E402


def point_celery_at(url: str) -> None:
    """Publish from this process to `url` from now on: close the pooled connections to the previous broker.

    kombu keeps its pools in module-wide registries keyed by broker URL: they are closed and cleared, not only
    the app's references, or switching back would hand out the closed pool of the earlier URL. The control
    mailbox caches the producer pool it first used (an in-process worker's replies): it is dropped too, or
    control messages and replies would go through the closed pool.
    """
    pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    del celery_app.control.mailbox.producer_pool
    celery_app.conf.broker_url = url


@pytest.fixture
def processes(tmp_path) -> Iterator[Processes]:
    with Processes(tmp_path) as processes:
        yield processes


@pytest.fixture
def sandbox_redis(processes, tmp_path) -> RedisServer:
    """The payment provider's ledger: persistent, as a provider keeps its charges when our broker restarts."""
    return RedisServer(processes, tmp_path, name="sandbox", persistent=True)


def fault_environment(processes, tmp_path, sandbox_redis, *, persistent: bool) -> Iterator[FaultEnvironment]:
    broker = RedisServer(processes, tmp_path, name="broker", persistent=persistent)
    previous = celery_app.conf.broker_url
    point_celery_at(broker.url)
    environment = FaultEnvironment(processes, tmp_path, broker=broker, sandbox_url=sandbox_redis.url)
    try:
        yield environment
    finally:
        processes.stop_all()
        point_celery_at(previous)


@pytest.fixture
def faults(transactional_db, processes, tmp_path, sandbox_redis) -> Iterator[FaultEnvironment]:
    """A broker with an append-only file (as in production), its workers started by the test."""
    yield from fault_environment(processes, tmp_path, sandbox_redis, persistent=True)


@pytest.fixture
def faults_without_persistence(transactional_db, processes, tmp_path, sandbox_redis) -> Iterator[FaultEnvironment]:
    """A broker that forgets everything on restart, as a Redis without persistence does."""
    yield from fault_environment(processes, tmp_path, sandbox_redis, persistent=False)
