"""Migrating the outbox from one receipt for all consumers to one per consumer, and back."""

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

SINGLE_RECEIPT = [("jobs", "0002_outbox_event_receipts")]
PER_CONSUMER = [("jobs", "0004_outbox_awaited_event_index")]


def migrate(targets):
    """Migrate the test database to `targets`; return the models as they are there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.fixture
def single_receipt_outbox():
    """The outbox as it was before, for the test; the latest schema again afterwards."""
    apps = migrate(SINGLE_RECEIPT)
    yield apps.get_model("jobs", "OutboxMessage")
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def test_events_confirmed_before_count_as_confirmed_by_every_consumer_configured(single_receipt_outbox, settings):
    # given: under the single receipt, a confirmed event, a sent one never confirmed, an unsent one and a task
    OutboxMessage = single_receipt_outbox
    sent_at = timezone.now() - timedelta(minutes=1)
    confirmed = OutboxMessage.objects.create(kind="event", name="order_placed", sent_at=sent_at, delivered_at=sent_at)
    unconfirmed = OutboxMessage.objects.create(kind="event", name="order_completed", sent_at=sent_at)
    unsent = OutboxMessage.objects.create(kind="event", name="order_failed")
    task = OutboxMessage.objects.create(kind="task", name="orders.process_order", sent_at=sent_at)
    settings.OUTBOX_EVENT_CONSUMERS = ["analytics.track_events", "exports.export_events"]

    # when
    OutboxMessage = migrate(PER_CONSUMER).get_model("jobs", "OutboxMessage")

    # then: only the event nobody confirmed awaits someone: every consumer configured
    awaiting = dict(OutboxMessage.objects.values_list("pk", "awaiting_consumers"))
    assert awaiting == {
        confirmed.pk: [],
        unconfirmed.pk: ["analytics.track_events", "exports.export_events"],
        unsent.pk: [],
        task.pk: [],
    }
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs_outboxmessage' ORDER BY indexname")
        indexes = [row[0] for row in cursor.fetchall()]
    assert indexes == ["jobs_outboxmessage_pkey", "outbox_awaited_event_idx", "outbox_unsent_idx"]


def test_migrating_back_confirms_what_no_consumer_awaits(single_receipt_outbox, settings):
    # given: per consumer, an event still awaited and one every consumer released (one gave up on it)
    settings.OUTBOX_EVENT_CONSUMERS = ["analytics.track_events"]
    OutboxMessage = migrate(PER_CONSUMER).get_model("jobs", "OutboxMessage")
    sent_at = timezone.now() - timedelta(minutes=1)
    awaited = OutboxMessage.objects.create(
        kind="event", name="order_placed", sent_at=sent_at, awaiting_consumers=["analytics.track_events"]
    )
    released = OutboxMessage.objects.create(kind="event", name="order_completed", sent_at=sent_at)

    # when
    OutboxMessage = migrate(SINGLE_RECEIPT).get_model("jobs", "OutboxMessage")

    # then: the old relay sends again the awaited event only
    delivered = dict(OutboxMessage.objects.values_list("pk", "delivered_at"))
    assert delivered[awaited.pk] is None
    assert delivered[released.pk] is not None
