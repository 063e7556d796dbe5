import base64
import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from analytics.models import Event
from analytics.tasks import track_events_task
from jobs import dead_letters, outbox
from jobs.exceptions import DeadLetterAlreadyReplayed, DeadLetterNotFound
from jobs.models import DeadLetter, OutboxMessage, TaskDelivery
from notifications.tasks import send_notification_task
from proj.celery import app as celery_app
from tests.conftest import queue_length, run_in_threads

pytestmark = pytest.mark.django_db


def queued_messages(queue: str) -> list[dict]:
    with celery_app.connection_for_write() as broker:
        return [json.loads(raw) for raw in broker.default_channel.client.lrange(queue, 0, -1)]


def enqueue_notification(**overrides) -> OutboxMessage:
    kwargs = {
        "order_id": "0b6bd2b5-7c1a-4a5e-9d27-3f1c6f1d2c11",
        "channel": "email",
        "kind": "order_confirmation",
        "recipient": "ada@example.com",
        "context": {},
        "region": "eu",
    } | overrides
    with transaction.atomic():
        return outbox.publish_on_commit(outbox.task_message(send_notification_task, **kwargs))[0]


@pytest.mark.django_db(transaction=True)
def test_the_outbox_must_be_written_inside_a_transaction():
    with pytest.raises(RuntimeError, match=r"inside transaction\.atomic"):
        outbox.publish_on_commit(outbox.task_message(send_notification_task, order_id="x"))


def test_a_message_is_published_with_the_outbox_id_as_task_id(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        message = enqueue_notification()

    [published] = queued_messages("cloud.eu")
    assert published["headers"]["id"] == str(message.id)
    assert published["headers"]["task"] == "notifications.send_notification"
    message.refresh_from_db()
    assert message.sent_at is not None


def test_one_transaction_writes_its_messages_together_and_publishes_its_tasks(django_capture_on_commit_callbacks):
    # when: two tasks and an event in one transaction
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        messages = outbox.publish_on_commit(
            outbox.task_message(send_notification_task, order_id="a", channel="email", region="eu"),
            outbox.event_message("order_completed", order_id="a"),
            outbox.task_message(send_notification_task, order_id="a", channel="push", region="eu"),
        )

    # then: one after-commit publish for both tasks; the event waits for the relay
    assert len(callbacks) == 1
    published = [message["headers"]["id"] for message in queued_messages("cloud.eu")]
    assert sorted(published) == sorted([str(messages[0].id), str(messages[2].id)])
    unsent = sorted(OutboxMessage.objects.filter(sent_at__isnull=True).values_list("name", flat=True))
    assert unsent == ["order_completed"]
    assert OutboxMessage.objects.filter(sent_at__isnull=False).count() == 2


def test_a_failed_publish_leaves_that_task_and_the_rest_to_the_relay(django_capture_on_commit_callbacks, monkeypatch):
    # given: the broker goes away after the first of three publishes
    publish = outbox._publish_task
    calls = []

    def publish_once(message):
        calls.append(message.pk)
        if len(calls) > 1:
            raise ConnectionError("Redis is gone")
        publish(message)

    monkeypatch.setattr(outbox, "_publish_task", publish_once)

    # when
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        first, second, third = outbox.publish_on_commit(
            *(outbox.task_message(send_notification_task, order_id=str(index), region="eu") for index in range(3))
        )

    # then: the first is sent; the others were not tried again once the broker failed, and wait for the relay
    assert calls == [first.pk, second.pk]
    rows = {row.pk: row for row in OutboxMessage.objects.all()}
    assert rows[first.pk].sent_at is not None
    assert [rows[pk].sent_at for pk in (second.pk, third.pk)] == [None, None]
    assert [rows[pk].publish_attempts for pk in (first.pk, second.pk, third.pk)] == [1, 1, 1]
    assert rows[third.pk].last_error == "ConnectionError('Redis is gone')"


def test_the_relay_publishes_tasks_that_missed_their_fast_path(django_capture_on_commit_callbacks, settings):
    # given: the transaction committed but its process died before publishing (the callback never ran)
    settings.OUTBOX_RELAY_AFTER_SECONDS = 0
    with django_capture_on_commit_callbacks(execute=False):
        message = enqueue_notification()
    assert queue_length("cloud.eu") == 0

    # when
    report = outbox.relay_outbox()
    second = outbox.relay_outbox()

    # then
    assert (report.tasks_sent, report.failed) == (1, 0)
    assert second.tasks_sent == 0
    assert [published["headers"]["id"] for published in queued_messages("cloud.eu")] == [str(message.id)]
    message.refresh_from_db()
    assert message.sent_at is not None


def test_the_relay_leaves_young_rows_to_the_fast_path(django_capture_on_commit_callbacks, settings):
    settings.OUTBOX_RELAY_AFTER_SECONDS = 3600
    with django_capture_on_commit_callbacks(execute=False):
        enqueue_notification()

    assert outbox.relay_outbox().tasks_sent == 0
    assert queue_length("cloud.eu") == 0


def test_the_relay_batches_events_for_each_consumer():
    with transaction.atomic():
        first = outbox.publish_on_commit(outbox.event_message("order_placed", order_id="a", total="1.00"))[0]
        second = outbox.publish_on_commit(outbox.event_message("order_completed", order_id="a", total="1.00"))[0]

    report = outbox.relay_outbox()

    assert report.events_sent == 2
    [published] = queued_messages("analytics")
    assert published["headers"]["task"] == "analytics.track_events"
    _args, kwargs, _options = json.loads(base64.b64decode(published["body"]))
    events = kwargs["events"]
    assert [(event["event_id"], event["type"], event["data"]) for event in events] == [
        (str(first.id), "order_placed", {"order_id": "a", "total": "1.00"}),
        (str(second.id), "order_completed", {"order_id": "a", "total": "1.00"}),
    ]
    assert outbox.relay_outbox().events_sent == 0


def test_a_run_relays_batch_after_batch_while_they_are_full_within_its_budget():
    with transaction.atomic():
        placed = [outbox.publish_on_commit(outbox.event_message("order_placed", order_id=str(n)))[0] for n in range(5)]

    one_batch = outbox.relay_outbox(batch_size=2, budget_seconds=0)
    rest = outbox.relay_outbox(batch_size=2)

    # A run with no time left still sends its first batch; one with time sends until a batch is not full.
    assert (one_batch.events_sent, rest.events_sent) == (2, 3)
    batches = published_event_ids("analytics")
    assert sorted(map(len, batches)) == [1, 2, 2]
    assert sorted(event_id for batch in batches for event_id in batch) == sorted(str(event.id) for event in placed)
    assert outbox.relay_outbox(batch_size=2).events_sent == 0


ORDER_A, ORDER_B = "0b6bd2b5-7c1a-4a5e-9d27-3f1c6f1d2c11", "5d0f1f0e-3b8a-4f4e-8c55-0f1b1d7e9a21"


def published_event_ids(queue: str) -> list[list[str]]:
    """The event ids of each batch waiting in `queue`."""
    batches = []
    for message in queued_messages(queue):
        _args, kwargs, _options = json.loads(base64.b64decode(message["body"]))
        batches.append([event["event_id"] for event in kwargs["events"]])
    return batches


def test_a_stored_batch_is_confirmed_and_an_unconfirmed_one_is_sent_again_after_a_while(settings):
    # given: two events sent in one batch; the batch reaches analytics for the first only (the second's was lost)
    settings.OUTBOX_EVENT_REDELIVER_AFTER_SECONDS = 600
    with transaction.atomic():
        stored = outbox.publish_on_commit(outbox.event_message("order_placed", order_id=ORDER_A, total="1.00"))[0]
        lost = outbox.publish_on_commit(outbox.event_message("order_placed", order_id=ORDER_B, total="1.00"))[0]
    outbox.relay_outbox()
    [[first, second]] = published_event_ids("analytics")
    assert (first, second) == (str(stored.id), str(lost.id))
    event = {"event_id": str(stored.id), "type": "order_placed", "occurred_at": "2026-11-27T10:00:00+00:00",
             "data": {"order_id": ORDER_A, "total": "1.00"}}  # fmt: skip
    # the consumer's body, then the hook Celery calls when it succeeded
    track_events_task(events=[event])
    track_events_task.on_success(1, "task-id", (), {"events": [event]})
    celery_app.connection_for_write().default_channel.client.delete("analytics")

    # when: the relay runs before and after the redelivery delay
    assert outbox.relay_outbox().events_sent == 0
    OutboxMessage.objects.update(sent_at=timezone.now() - timedelta(seconds=601))
    report = outbox.relay_outbox()

    # then: only the unconfirmed event goes again, once
    assert report.events_sent == 1
    assert published_event_ids("analytics") == [[str(lost.id)]]
    assert outbox.relay_outbox().events_sent == 0
    assert Event.objects.filter(event_id=stored.id).count() == 1
    assert list(OutboxMessage.objects.filter(delivered_at__isnull=False).values_list("pk", flat=True)) == [stored.pk]


@pytest.mark.django_db(transaction=True)
def test_concurrent_relays_publish_each_row_once(settings):
    # given: 50 committed rows whose fast path never ran
    settings.OUTBOX_RELAY_AFTER_SECONDS = 0
    OutboxMessage.objects.bulk_create(
        OutboxMessage(kind=OutboxMessage.Kind.TASK, name="notifications.send_notification", payload={"region": "eu"})
        for _ in range(50)
    )

    reports = run_in_threads(3, lambda index: outbox.relay_outbox(batch_size=20))

    assert sum(report.tasks_sent for report in reports) == 50
    ids = [published["headers"]["id"] for published in queued_messages("cloud.eu")]
    assert len(ids) == len(set(ids)) == 50


def test_replaying_a_dead_letter_schedules_the_task_again(django_capture_on_commit_callbacks):
    kwargs = {
        "order_id": "0b6bd2b5-7c1a-4a5e-9d27-3f1c6f1d2c11",
        "channel": "email",
        "kind": "order_failed",
        "recipient": "ada@example.com",
        "context": {"reason": "x"},
        "region": "eu",
    }
    dead_letter = dead_letters.record_dead_letter(
        task_id="t-1",
        task_name="notifications.send_notification",
        args=[],
        kwargs=kwargs,
        reason="ChannelUnavailable: down",
        attempts=9,
    )

    with django_capture_on_commit_callbacks(execute=True):
        dead_letters.replay_dead_letter(dead_letter_id=dead_letter.pk)

    dead_letter.refresh_from_db()
    assert dead_letter.replayed_at is not None
    [message] = OutboxMessage.objects.filter(name="notifications.send_notification")
    assert message.payload == kwargs
    assert queue_length("cloud.eu") == 1
    with pytest.raises(DeadLetterAlreadyReplayed):
        dead_letters.replay_dead_letter(dead_letter_id=dead_letter.pk)


def test_replaying_an_unknown_dead_letter_is_not_found():
    with pytest.raises(DeadLetterNotFound):
        dead_letters.replay_dead_letter(dead_letter_id=404)


def test_recording_a_dead_letter_twice_keeps_one_row():
    for attempts in (3, 4):
        dead_letters.record_dead_letter(
            task_id="t-2",
            task_name="orders.process_order",
            args=[],
            kwargs={"order_id": "x"},
            reason=f"attempt {attempts}",
            attempts=attempts,
        )

    [dead_letter] = DeadLetter.objects.all()
    assert (dead_letter.reason, dead_letter.attempts) == ("attempt 4", 4)


def test_redeliveries_are_counted_per_task_id():
    counts = [dead_letters.count_redelivery(task_id="t-3", task_name="orders.process_order") for _ in range(3)]

    assert counts == [2, 3, 4]
    assert TaskDelivery.objects.get(task_id="t-3").deliveries == 4
