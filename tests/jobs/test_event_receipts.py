"""One receipt per consumer of the outbox's events: who got what, who confirmed it, and what the relay sends again."""

import base64
import json
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analytics.tasks import track_events_task
from exports.tasks import export_events_task
from jobs import outbox, selectors
from jobs.models import DeadLetter, OutboxMessage
from proj.celery import app as celery_app

pytestmark = pytest.mark.django_db

ANALYTICS, EXPORT = "analytics.track_events", "exports.export_events"
ORDER_A, ORDER_B = "0b6bd2b5-7c1a-4a5e-9d27-3f1c6f1d2c11", "5d0f1f0e-3b8a-4f4e-8c55-0f1b1d7e9a21"


@pytest.fixture
def two_consumers(settings) -> None:
    """Analytics and the export, both receiving every event (the export has a function)."""
    settings.OUTBOX_EVENT_CONSUMERS = [ANALYTICS, EXPORT]
    settings.OUTBOX_EVENT_REDELIVER_AFTER_SECONDS = 600


def place_events(*types: str) -> list[OutboxMessage]:
    with transaction.atomic():
        return outbox.publish_on_commit(
            *(outbox.event_message(event_type, order_id=ORDER_A, total="1.00") for event_type in types)
        )


def batches_by_consumer() -> dict[str, list[list[str]]]:
    """The event ids of each batch waiting in the analytics queue (both consumers' queue), by consumer; emptied."""
    with celery_app.connection_for_write() as broker:
        client = broker.default_channel.client
        raw_messages = client.lrange("analytics", 0, -1)
        client.delete("analytics")
    batches: dict[str, list[list[str]]] = {}
    for raw in raw_messages:
        message = json.loads(raw)
        _args, kwargs, _options = json.loads(base64.b64decode(message["body"]))
        batches.setdefault(message["headers"]["task"], []).append([event["event_id"] for event in kwargs["events"]])
    return batches


def events_of(messages: list[OutboxMessage]) -> list[dict]:
    return [
        {"event_id": str(message.id), "type": message.name, "occurred_at": "2026-12-01T10:00:00+00:00", "data": {}}
        for message in messages
    ]


def receipts() -> dict[str, tuple[list[str], bool]]:
    """Each event's awaited consumers, and whether it counts as delivered to all."""
    return {
        str(pk): (awaiting, delivered_at is not None)
        for pk, awaiting, delivered_at in OutboxMessage.objects.values_list("pk", "awaiting_consumers", "delivered_at")
    }


def age_sends(*messages: OutboxMessage, seconds: int = 601) -> None:
    """Make the sends of `messages` (all, by default) as old as `seconds`."""
    rows = (
        OutboxMessage.objects.filter(pk__in=[message.pk for message in messages]) if messages else OutboxMessage.objects
    )
    rows.update(sent_at=timezone.now() - timedelta(seconds=seconds))


def test_without_a_function_the_export_is_no_consumer(settings):
    # The test settings configure no function (EXPORT_LAMBDA_FUNCTION_NAME is empty), as a fresh deployment.
    assert settings.EXPORT_LAMBDA_FUNCTION_NAME == ""
    assert settings.OUTBOX_EVENT_CONSUMERS == [ANALYTICS]


def test_a_batch_confirmed_by_analytics_but_not_the_export_goes_again_to_the_export_only(two_consumers):
    # given: two events sent to both consumers
    first, second = place_events("order_placed", "order_completed")
    assert outbox.relay_outbox().events_sent == 2
    ids = [str(first.id), str(second.id)]
    assert batches_by_consumer() == {ANALYTICS: [ids], EXPORT: [ids]}
    assert receipts() == {ids[0]: ([ANALYTICS, EXPORT], False), ids[1]: ([ANALYTICS, EXPORT], False)}
    # analytics stored both; the export's batch reached the function for the first only (the rest was lost)
    track_events_task.on_success(2, "analytics-task", (), {"events": events_of([first, second])})
    export_events_task.on_success(1, "export-task", (), {"events": events_of([first])})
    assert receipts() == {ids[0]: ([], True), ids[1]: ([EXPORT], False)}

    # when: the relay runs before and after the redelivery delay
    assert outbox.relay_outbox().events_sent == 0
    age_sends()
    report = outbox.relay_outbox()

    # then: the second event goes again, to the export only, once
    assert report.events_sent == 1
    assert batches_by_consumer() == {EXPORT: [[ids[1]]]}
    assert outbox.relay_outbox().events_sent == 0
    assert OutboxMessage.objects.get(pk=second.pk).publish_attempts == 2
    # and once the export confirms it, nothing awaits anyone
    export_events_task.on_success(1, "export-task-2", (), {"events": events_of([second])})
    assert receipts() == {ids[0]: ([], True), ids[1]: ([], True)}
    age_sends()
    assert outbox.relay_outbox().events_sent == 0
    assert batches_by_consumer() == {}


def test_a_batch_a_consumer_gave_up_on_is_dead_lettered_and_not_sent_again(two_consumers):
    # given: a batch that the export dead-lettered (its retries ran out), and analytics stored
    [event] = place_events("order_placed")
    outbox.relay_outbox()
    batches_by_consumer()
    track_events_task.on_success(1, "analytics-task", (), {"events": events_of([event])})
    export_events_task.on_failure(RuntimeError("refused"), "export-task", (), {"events": events_of([event])}, None)

    # when: the relay runs long after
    age_sends()
    report = outbox.relay_outbox()

    # then: the dead letter keeps the batch for ops; nothing awaits the export, which never confirmed it
    assert report.events_sent == 0
    assert batches_by_consumer() == {}
    assert receipts() == {str(event.id): ([], False)}
    [dead_letter] = DeadLetter.objects.all()
    assert (dead_letter.task_name, dead_letter.kwargs) == (EXPORT, {"events": events_of([event])})


def test_a_consumer_turned_off_receives_nothing_and_holds_nothing_back(two_consumers, settings):
    # given: an event analytics confirmed and the export did not, when the export is turned off
    [old] = place_events("order_placed")
    outbox.relay_outbox()
    batches_by_consumer()
    track_events_task.on_success(1, "analytics-task", (), {"events": events_of([old])})
    settings.OUTBOX_EVENT_CONSUMERS = [ANALYTICS]

    # when: a new event comes, and the relay runs after the redelivery delay
    [new] = place_events("order_completed")
    assert outbox.relay_outbox().events_sent == 1
    assert batches_by_consumer() == {ANALYTICS: [[str(new.id)]]}
    age_sends(old)
    report = outbox.relay_outbox()

    # then: nothing goes to the export, and nothing waits for it
    assert report.events_sent == 0
    assert batches_by_consumer() == {}
    assert receipts() == {str(old.id): ([], False), str(new.id): ([ANALYTICS], False)}
    assert selectors.get_event_backlog_by_consumer()[ANALYTICS].unconfirmed == 1
    assert list(selectors.get_event_backlog_by_consumer()) == [ANALYTICS]


def test_a_receipt_for_a_malformed_batch_changes_nothing_and_does_not_fail(two_consumers):
    [event] = place_events("order_placed")
    outbox.relay_outbox()

    released = outbox.abandon_events(consumer=ANALYTICS, event_ids=["not-a-uuid", str(event.id)])
    confirmed = outbox.confirm_events(consumer=EXPORT, event_ids=["not-a-uuid"])

    assert (released, confirmed) == (1, 0)
    assert receipts() == {str(event.id): ([EXPORT], False)}


def test_the_backlog_per_consumer_counts_unsent_and_awaited_events(two_consumers):
    # given: one event sent to both and confirmed by analytics only, then one not sent yet (an hour old)
    [sent] = place_events("order_placed")
    outbox.relay_outbox()
    track_events_task.on_success(1, "analytics-task", (), {"events": events_of([sent])})
    OutboxMessage.objects.filter(pk=sent.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    [unsent] = place_events("order_completed")
    OutboxMessage.objects.filter(pk=unsent.pk).update(created_at=timezone.now() - timedelta(minutes=5))

    backlog = selectors.get_event_backlog_by_consumer()

    assert {consumer: item.unconfirmed for consumer, item in backlog.items()} == {ANALYTICS: 1, EXPORT: 2}
    assert 300 <= backlog[ANALYTICS].oldest_age_seconds < 360
    assert 600 <= backlog[EXPORT].oldest_age_seconds < 660


def explain(sql: str) -> str:
    with transaction.atomic(), connection.cursor() as cursor:
        # With sequential scans priced out, the planner takes an index wherever one answers the query: the plan
        # names the partial index only if the query's predicate implies the index's.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_relay_and_the_backlog_read_the_outbox_through_its_partial_indexes(two_consumers):
    # given: events sent long ago and awaited, and one not sent yet
    place_events("order_placed", "order_completed")
    outbox.relay_outbox()
    age_sends()
    place_events("order_failed")

    # when: the queries the relay (every 2 s) and a metrics scrape run
    with CaptureQueriesContext(connection) as relay_queries:
        outbox.relay_outbox()
    with CaptureQueriesContext(connection) as backlog_queries:
        selectors.get_event_backlog_by_consumer()

    # then
    scans = [query["sql"] for query in relay_queries.captured_queries if "FOR UPDATE" in query["sql"]]
    unsent_tasks, unsent_events, awaited_events = scans
    assert "outbox_unsent_idx" in explain(unsent_tasks)
    assert "outbox_unsent_idx" in explain(unsent_events)
    assert "outbox_awaited_event_idx" in explain(awaited_events)
    unsent_count, *per_consumer = [query["sql"] for query in backlog_queries.captured_queries]
    assert "outbox_unsent_idx" in explain(unsent_count)
    assert len(per_consumer) == 2
    for query in per_consumer:
        assert "outbox_awaited_event_idx" in explain(query)
