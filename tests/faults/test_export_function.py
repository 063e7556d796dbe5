"""Issue 15, part 2: order events exported to a function, across processes.

A real prefork worker sends the export's batches to a local HTTP server of this test's that speaks Lambda's Invoke
API (tests/lambda_server.py), through boto3 as in production: `AWS_ENDPOINT_URL_LAMBDA` points botocore at it,
with static fake credentials and a region. The test process places the orders and runs the outbox relay, as beat
would.
"""

import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from jobs.models import DeadLetter, OutboxMessage
from jobs.outbox import relay_outbox
from orders.models import Order
from tests.factories import ProductFactory
from tests.faults.helpers import assert_events_recorded_once, place_one, wait_for_orders
from tests.lambda_server import LambdaServer, start_lambda_server

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ORDERS = 50
FUNCTION_NAME, REGION = "shop-events", "eu-west-1"
EXPORT = "exports.export_events"
# Small payloads, so that the worker splits every batch into several invocations.
MAX_PAYLOAD_BYTES = 4096
# Fewer refusals in a row than a task's 9 attempts (ReliableTask.max_retries 8): a longer outage ends each
# batch in a dead letter for ops to replay, which the second test shows for a refusal.
REFUSALS = ["TooManyRequestsException", "ServiceException"] * 3


@pytest.fixture
def lambda_server() -> Iterator[LambdaServer]:
    state, server = start_lambda_server()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def export_on(settings, monkeypatch, tmp_path, lambda_server) -> dict[str, str]:
    """The export turned on in this process (its relay) and the environment of the worker that exports."""
    settings.OUTBOX_EVENT_CONSUMERS = ["analytics.track_events", EXPORT]
    # Nothing of the machine's own AWS configuration reaches the worker: only what is set below.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)
    return {
        "EXPORT_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "EXPORT_LAMBDA_REGION": REGION,
        "EXPORT_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD_BYTES),
        "AWS_ENDPOINT_URL_LAMBDA": lambda_server.url,
        "AWS_ACCESS_KEY_ID": "AKIDEXPORTTEST",
        "AWS_SECRET_ACCESS_KEY": "export-test-secret",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def event_ids() -> set[str]:
    return {str(pk) for pk in OutboxMessage.objects.filter(kind="event").values_list("pk", flat=True)}


def every_event_handled() -> bool:
    """Every event sent, and every consumer's receipt in: confirmed, or given up on."""
    events = OutboxMessage.objects.filter(kind="event")
    return not events.filter(sent_at__isnull=True).exists() and not events.exclude(awaiting_consumers=[]).exists()


def relay_until(predicate, *, timeout: float, message: str, report) -> None:
    """Run the relay as beat does (every OUTBOX_RELAY_INTERVAL_SECONDS, here faster) until `predicate` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"Timed out after {timeout} s waiting for {message}: {report()}"
        relay_outbox()
        time.sleep(0.5)


def test_every_event_of_fifty_orders_reaches_the_function_though_it_refuses_for_a_while(
    faults, export_on, lambda_server
):
    # given: a function that throttles and fails six times before it accepts, and a worker exporting to it
    ProductFactory(sku="MUG-001", stock=ORDERS)
    lambda_server.next_errors = list(REFUSALS)
    worker = faults.start_worker(concurrency=2, **export_on)

    # when: fifty orders are placed and processed, their events relayed meanwhile as beat would
    orders = [place_one(f"export{index}@example.com", quantity=1) for index in range(ORDERS)]

    def everything_exported() -> bool:
        expected = event_ids()
        return (
            Order.objects.filter(status=Order.Status.COMPLETED).count() == ORDERS
            and len(expected) == 3 * ORDERS  # order_placed, order_completed, notification_sent
            and expected <= set(lambda_server.received_event_ids())
            and every_event_handled()
        )

    relay_until(
        everything_exported,
        timeout=120,
        message="every event at the function and confirmed",
        report=lambda: {"statuses": Counter(lambda_server.statuses()), "log": worker.log()[-3000:]},
    )

    # then: every event arrived, at least once, and nothing else did
    received = Counter(lambda_server.received_event_ids())
    assert set(received) == event_ids()
    types = {
        event["event_id"]: event["type"]
        for invocation in lambda_server.accepted()
        for event in invocation.payload["events"]
    }
    assert Counter(types.values()) == {"order_placed": ORDERS, "order_completed": ORDERS, "notification_sent": ORDERS}
    # the refusals were met and retried by the task, one request per attempt
    statuses = Counter(lambda_server.statuses())
    assert (statuses[429], statuses[500]) == (3, 3)
    assert "FunctionUnavailable('Lambda answered 429 TooManyRequestsException: Rate Exceeded.')" in worker.log()
    assert "FunctionUnavailable('Lambda answered 500 ServiceException: An internal error occurred.')" in worker.log()
    # every request was Lambda's asynchronous Invoke, signed for the region, within the payload limit
    for invocation in lambda_server.invocations:
        assert (invocation.function_name, invocation.invocation_type) == (FUNCTION_NAME, "Event")
        assert re.match(
            rf"^AWS4-HMAC-SHA256 Credential=AKIDEXPORTTEST/\d{{8}}/{REGION}/lambda/", invocation.authorization
        )
        assert len(invocation.body) <= MAX_PAYLOAD_BYTES
        assert invocation.payload["version"] == 1
    assert len(lambda_server.accepted()) > ORDERS * 3 * 200 // MAX_PAYLOAD_BYTES  # batches were split
    # and analytics, the other consumer, has every event once; nothing was given up
    assert_events_recorded_once(orders, event_type="order_placed")
    assert_events_recorded_once(orders, event_type="order_completed")
    assert DeadLetter.objects.count() == 0
    assert not OutboxMessage.objects.filter(kind="event", delivered_at__isnull=True).exists()


def test_a_function_that_does_not_exist_dead_letters_each_batch_after_one_request(
    faults, export_on, lambda_server, settings
):
    # given: a function name Lambda does not know
    ProductFactory(sku="MUG-001", stock=3)
    lambda_server.always = "ResourceNotFoundException"
    faults.start_worker(concurrency=2, **export_on)

    # when
    orders = [place_one(f"missing{index}@example.com", quantity=1) for index in range(3)]
    wait_for_orders([order.pk for order in orders], timeout=60)
    relay_until(
        lambda: len(event_ids()) == 9 and every_event_handled(),
        timeout=60,
        message="both consumers to handle every batch",
        report=lambda: {"statuses": Counter(lambda_server.statuses())},
    )

    # then: each export batch was tried once and dead-lettered with Lambda's reason; analytics has everything
    dead_letters = list(DeadLetter.objects.filter(task_name=EXPORT))
    assert len(dead_letters) == len(lambda_server.invocations) > 0
    assert {dead_letter.attempts for dead_letter in dead_letters} == {1}
    assert {dead_letter.reason for dead_letter in dead_letters} == {
        f"FunctionRefused: Lambda answered 404 ResourceNotFoundException: Function not found: {FUNCTION_NAME}"
    }
    assert sorted(event["event_id"] for d in dead_letters for event in d.kwargs["events"]) == sorted(event_ids())
    assert Order.objects.filter(status=Order.Status.COMPLETED).count() == 3
    assert_events_recorded_once(orders, event_type="order_completed")
    # and no relay sends them to the export again: they wait for ops, in the dead letters
    settings.OUTBOX_EVENT_REDELIVER_AFTER_SECONDS = 0
    requests = len(lambda_server.invocations)
    assert relay_outbox().events_sent == 0
    time.sleep(1)
    assert len(lambda_server.invocations) == requests
