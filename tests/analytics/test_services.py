import uuid

import pytest
from django.db.models import Count

from analytics import services
from analytics.models import Event

pytestmark = pytest.mark.django_db


def event(event_type: str, order_id: str) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "type": event_type,
        "occurred_at": "2026-11-27T10:00:00+00:00",
        "data": {"order_id": order_id, "total": "10.00"},
    }


def test_a_redelivered_batch_is_stored_once():
    order_id = str(uuid.uuid4())
    batch = [event("order_placed", order_id), event("order_completed", order_id)]

    first = services.record_events(events=batch)
    second = services.record_events(events=batch)

    assert (first, second) == (2, 0)
    stored = Event.objects.get(event_type="order_completed")
    assert str(stored.order_id) == order_id
    assert stored.data == {"order_id": order_id, "total": "10.00"}
    assert stored.occurred_at.isoformat() == "2026-11-27T10:00:00+00:00"


def test_counts_per_event_type():
    order_id = str(uuid.uuid4())
    services.record_events(
        events=[event("order_placed", order_id), event("order_placed", order_id), event("order_failed", order_id)]
    )

    counts = Event.objects.values_list("event_type").annotate(count=Count("id")).order_by("event_type")
    assert dict(counts) == {"order_failed": 1, "order_placed": 2}


def test_an_empty_batch_stores_nothing():
    assert services.record_events(events=[]) == 0
