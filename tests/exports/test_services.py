"""The export: batches split to fit Lambda's payload limit, events too large alone dead-lettered, and the task's
retry policy (through ReliableTask) for each kind of answer."""

import base64
import json
import time
from dataclasses import replace

import pytest
from django.db import transaction

from analytics.models import Event
from exports import services
from exports.exceptions import ExportDisabled, FunctionUnavailable
from exports.services import EXPORT_TASK_NAME, ExportReport, split_into_payloads
from exports.tasks import export_events_task
from jobs import outbox
from jobs.base import TRANSIENT_ERRORS
from jobs.models import DeadLetter, OutboxMessage
from proj.celery import app as celery_app
from tests.conftest import project_worker
from tests.exports.conftest import FUNCTION_NAME
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db


INVOKE = {"FunctionName": FUNCTION_NAME, "InvocationType": "Event"}
ORDER_ID = "0b6bd2b5-7c1a-4a5e-9d27-3f1c6f1d2c11"


def event(index: int, **data) -> dict:
    return {
        "event_id": f"00000000-0000-4000-8000-{index:012d}",
        "type": "order_placed",
        "occurred_at": "2026-12-01T10:00:00+00:00",
        "data": {"order_id": f"order-{index}", **data},
    }


def body(*events: dict) -> bytes:
    """The payload of `events` as the export sends it: compact JSON, UTF-8."""
    return json.dumps({"version": 1, "events": list(events)}, ensure_ascii=False, separators=(",", ":")).encode()


def test_the_payload_is_the_versioned_events_in_compact_json():
    events = [event(1), event(2, total="9.50")]

    [payload], oversized = split_into_payloads(events=events, max_bytes=1_000_000)

    assert payload.body == body(*events)
    assert json.loads(payload.body) == {"version": 1, "events": events}
    assert payload.event_ids == [events[0]["event_id"], events[1]["event_id"]]
    assert oversized == []


def test_a_batch_is_split_where_the_next_event_would_cross_the_limit():
    events = [event(index) for index in range(5)]
    two = len(body(*events[:2]))

    # when: exactly two events fit, then one byte less
    at_limit, _ = split_into_payloads(events=events, max_bytes=two)
    below_limit, _ = split_into_payloads(events=events, max_bytes=two - 1)

    # then: every payload within the limit, measured in bytes sent; every event once, in order
    assert [payload.body for payload in at_limit] == [body(*events[:2]), body(*events[2:4]), body(events[4])]
    assert [len(payload.body) for payload in below_limit] == [len(body(events[0]))] * 5
    for payloads in (at_limit, below_limit):
        assert [e for payload in payloads for e in json.loads(payload.body)["events"]] == events


def test_the_size_is_counted_in_bytes_of_utf8_not_characters():
    events = [event(1, name="Zoë 🍵" * 50), event(2, name="Zoë 🍵" * 50)]
    one = len(body(events[0]))
    assert one > len(body(events[0]).decode())  # more bytes than characters

    payloads, _ = split_into_payloads(events=events, max_bytes=one + len(body(events[1])) - len(body()) + 1)
    too_small, _ = split_into_payloads(events=events, max_bytes=one + len(body(events[1])) - len(body()))

    assert [len(payload.event_ids) for payload in payloads] == [2]
    assert [len(payload.event_ids) for payload in too_small] == [1, 1]


def test_an_event_too_large_alone_is_set_aside_and_the_rest_is_sent():
    small, large, last = event(1), event(2, note="x" * 2000), event(3)

    payloads, oversized = split_into_payloads(events=[small, large, last], max_bytes=1000)

    assert [payload.body for payload in payloads] == [body(small, last)]
    assert [(item.event, item.size) for item in oversized] == [(large, len(body(large)))]


def test_a_batch_retried_after_a_later_payload_failed_sends_the_earlier_ones_again(stubbed, monkeypatch):
    # given: a batch of two payloads; Lambda queues the first and throttles the second, then queues both
    function, stubber = stubbed
    first, second = event(1), event(2)
    monkeypatch.setattr(services, "get_function", lambda: replace(function, max_payload_bytes=len(body(first)) + 1))
    stubber.add_response("invoke", {"StatusCode": 202}, {**INVOKE, "Payload": body(first)})
    stubber.add_client_error("invoke", "TooManyRequestsException", http_status_code=429)
    stubber.add_response("invoke", {"StatusCode": 202}, {**INVOKE, "Payload": body(first)})
    stubber.add_response("invoke", {"StatusCode": 202}, {**INVOKE, "Payload": body(second)})

    # when: the attempt and its retry
    with pytest.raises(FunctionUnavailable):
        services.export_events(events=[first, second])
    report = services.export_events(events=[first, second])

    # then: the first event reached the function twice (at least once, as promised; its id tells the duplicate)
    assert report == ExportReport(invocations=2, events_sent=2, events_dead_lettered=0)


@pytest.fixture
def relayed(export_settings) -> list[dict]:
    """Two events (`order_completed` a 2 kB one) relayed to analytics and the export: as the export's task receives
    them."""
    with transaction.atomic():
        outbox.publish_on_commit(
            outbox.event_message("order_placed", order_id=ORDER_ID, total="1.00"),
            outbox.event_message("order_completed", order_id=ORDER_ID, total="1.00", note="x" * 2000),
        )
    assert outbox.relay_outbox().events_sent == 2
    # Read from the export's message itself: the two rows of one transaction share their created_at, so the order
    # within the batch is the relay's, which a second query need not repeat.
    with celery_app.connection_for_write() as broker:
        messages = [json.loads(raw) for raw in broker.default_channel.client.lrange("analytics", 0, -1)]
    (export,) = [message for message in messages if message["headers"]["task"] == EXPORT_TASK_NAME]
    _args, kwargs, _options = json.loads(base64.b64decode(export["body"]))
    return kwargs["events"]


def receipts() -> list[tuple[list[str], bool]]:
    """Each event's awaited consumers, oldest first, and whether every consumer confirmed it."""
    rows = OutboxMessage.objects.order_by("created_at").values_list("awaiting_consumers", "delivered_at")
    return [(awaiting, delivered_at is not None) for awaiting, delivered_at in rows]


def test_the_event_too_large_is_dead_lettered_alone_and_released(relayed, stubbed, monkeypatch):
    # given: a function whose payloads may hold 1,000 bytes, and a batch of a small event and a 2 kB one
    function, stubber = stubbed
    monkeypatch.setattr(services, "get_function", lambda: replace(function, max_payload_bytes=1000))
    (small,), (large,) = (
        [event for event in relayed if event["type"] == kind] for kind in ("order_placed", "order_completed")
    )
    stubber.add_response("invoke", {"StatusCode": 202}, {**INVOKE, "Payload": body(small)})

    # when: the task's body, then the hook Celery calls when it succeeded
    report = services.export_events(events=relayed)
    export_events_task.on_success(report.events_sent, "export-task", (), {"events": relayed})

    # then: the small one sent and confirmed; the large one kept for ops and awaited no more
    assert report == ExportReport(invocations=1, events_sent=1, events_dead_lettered=1)
    [dead_letter] = DeadLetter.objects.all()
    assert dead_letter.task_id == f"{EXPORT_TASK_NAME}:oversized:{large['event_id']}"
    assert (dead_letter.task_name, dead_letter.kwargs, dead_letter.attempts) == (
        EXPORT_TASK_NAME,
        {"events": [large]},
        1,
    )
    assert dead_letter.reason == (
        f"EventTooLarge: event {large['event_id']} makes a payload of {len(body(large))} bytes, over the limit of 1000."
    )
    assert receipts() == [(["analytics.track_events"], False), (["analytics.track_events"], False)]


def wait_until_nobody_awaits() -> None:
    wait_for(
        lambda: not OutboxMessage.objects.exclude(awaiting_consumers=[]).exists(),
        timeout=60,
        message="both consumers to handle their batch",
    )


@pytest.mark.django_db(transaction=True)
def test_a_throttled_or_failing_function_is_retried_by_the_worker_until_it_accepts(relayed, stubbed, monkeypatch):
    # given: Lambda throttles, then fails, then queues the invocation
    function, stubber = stubbed
    monkeypatch.setattr(services, "get_function", lambda: function)
    expected = {**INVOKE, "Payload": body(*relayed)}
    stubber.add_client_error("invoke", "TooManyRequestsException", http_status_code=429, expected_params=expected)
    stubber.add_client_error("invoke", "ServiceException", http_status_code=500, expected_params=expected)
    stubber.add_response("invoke", {"StatusCode": 202}, expected)

    # when: a worker takes the two batches the relay sent (analytics', the export's)
    with project_worker():
        wait_until_nobody_awaits()

    # then: three attempts of the export (the Stubber checks each), each batch confirmed, no dead letter
    assert receipts() == [([], True), ([], True)]
    assert DeadLetter.objects.count() == 0
    assert Event.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_refused_batch_is_dead_lettered_at_once_and_not_sent_again(relayed, stubbed, monkeypatch, settings):
    # given: a function that does not exist
    function, stubber = stubbed
    monkeypatch.setattr(services, "get_function", lambda: function)
    stubber.add_client_error(
        "invoke", "ResourceNotFoundException", "Function not found", http_status_code=404,
        expected_params={**INVOKE, "Payload": body(*relayed)},
    )  # fmt: skip

    # when
    with project_worker():
        wait_until_nobody_awaits()
        # (a second attempt would find no answer queued in the Stubber and fail differently)
        time.sleep(1)

    # then: one attempt, the batch kept for ops and released by the export; analytics has it
    [dead_letter] = DeadLetter.objects.all()
    assert (dead_letter.task_name, dead_letter.kwargs, dead_letter.attempts) == (
        EXPORT_TASK_NAME,
        {"events": relayed},
        1,
    )
    assert dead_letter.reason == "FunctionRefused: Lambda answered 404 ResourceNotFoundException: Function not found"
    assert receipts() == [([], False), ([], False)]
    assert Event.objects.count() == 2
    settings.OUTBOX_EVENT_REDELIVER_AFTER_SECONDS = 0
    assert outbox.relay_outbox().events_sent == 0


def test_a_batch_that_arrives_once_the_export_is_off_is_dead_lettered_not_retried(relayed, settings):
    settings.EXPORT_LAMBDA_FUNCTION_NAME = ""

    with pytest.raises(ExportDisabled, match=r"^No function is configured \(EXPORT_LAMBDA_FUNCTION_NAME is empty\)\.$"):
        export_events_task(events=relayed)

    assert not isinstance(ExportDisabled("x"), TRANSIENT_ERRORS)
