"""Idempotency-Key on POST /api/orders: a retried request takes effect once."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.test import Client
from django.utils import timezone

from jobs.models import OutboxMessage
from orders import services
from orders.models import IdempotencyKey, Order
from orders.tasks import prune_idempotency_keys_task
from tests.api.conftest import ORDER, post_json
from tests.conftest import run_in_threads
from tests.helpers import wait_for

KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"


def place_with_key(body=ORDER, key=KEY):
    return post_json(Client(), "/api/orders", body, **{"Idempotency-Key": key})


@pytest.mark.django_db
def test_a_retry_gets_the_first_response_again_and_places_nothing(catalog, sandbox):
    first = place_with_key()
    order = Order.objects.get()
    services.process_order(order_id=str(order.id))  # the order moves on; the stored response does not

    retry = place_with_key()

    assert first.status_code == retry.status_code == 201
    assert retry.content == first.content
    assert retry.json()["status"] == "pending"
    assert retry["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Order.objects.count() == 1
    assert OutboxMessage.objects.filter(name="orders.process_order").count() == 1
    stored = IdempotencyKey.objects.get()
    assert (stored.key, stored.response_status, stored.response_body) == (KEY, 201, first.content.decode())


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_422(catalog):
    place_with_key()

    response = place_with_key({**ORDER, "items": [{"sku": "MUG-001", "quantity": 3}]})

    assert response.status_code == 422
    assert response.json() == {
        "error": {
            "code": "idempotency_key_reused",
            "message": "This Idempotency-Key was used for a different request; use a new key for a new request.",
            "fields": {"Idempotency-Key": "Already used for a different request."},
        }
    }
    assert Order.objects.count() == 1


@pytest.mark.django_db
def test_a_request_that_failed_stores_nothing_and_may_be_corrected_under_its_key(catalog):
    failed = place_with_key({**ORDER, "region": "mars"})

    corrected = place_with_key()

    assert failed.status_code == 422
    assert corrected.status_code == 201
    assert "Idempotent-Replayed" not in corrected
    assert Order.objects.count() == 1
    assert IdempotencyKey.objects.get().response_status == 201


@pytest.mark.django_db
def test_keys_differ_from_each_other(catalog):
    first = place_with_key(key="first")
    second = place_with_key(key="second")

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert Order.objects.count() == 2


@pytest.mark.django_db
def test_the_ietf_drafts_quoted_key_is_the_same_key(catalog):
    first = place_with_key(key=KEY)

    retry = place_with_key(key=f'"{KEY}"')

    assert retry.content == first.content
    assert retry["Idempotent-Replayed"] == "true"
    assert Order.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "  ", "a key", "x" * 256, "clé", "\t"])
def test_a_malformed_key_is_400(catalog, key):
    response = place_with_key(key=key)

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalid_idempotency_key",
            "message": "An Idempotency-Key is 1 to 255 visible ASCII characters, such as a UUID.",
            "fields": {"Idempotency-Key": "Give 1 to 255 visible ASCII characters."},
        }
    }
    assert not Order.objects.exists()


@pytest.mark.django_db
def test_a_key_past_its_time_to_live_is_a_new_key(catalog):
    place_with_key()
    IdempotencyKey.objects.update(
        created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS + 1)
    )

    response = place_with_key({**ORDER, "items": [{"sku": "MUG-001", "quantity": 3}]})

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert Order.objects.count() == 2
    assert IdempotencyKey.objects.get().response_body == response.content.decode()


@pytest.mark.django_db
def test_the_order_and_its_stored_response_commit_together(catalog, monkeypatch):
    def fail_to_store(**fields):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(IdempotencyKey.objects, "create", fail_to_store)

    response = post_json(Client(raise_request_exception=False), "/api/orders", ORDER, **{"Idempotency-Key": KEY})

    assert response.status_code == 500
    assert not Order.objects.exists()
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_a_replay_does_not_count_against_the_rate_limit(catalog, settings):
    settings.RATE_LIMITS = {"place_order": (1, 60)}
    place_with_key()

    replay = place_with_key()
    another_order = post_json(Client(), "/api/orders", ORDER)

    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert another_order.status_code == 429


def advisory_locks_held() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return cursor.fetchone()[0]


def place_in_own_thread(key=KEY):
    try:
        return place_with_key(key=key)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_a_retry_while_the_first_request_is_in_flight_is_409(catalog):
    with ThreadPoolExecutor(max_workers=2) as pool:
        # given: the first request holds the key, and waits inside its transaction for a lock this test holds
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {Order._meta.db_table} IN EXCLUSIVE MODE")
            first = pool.submit(place_in_own_thread)
            wait_for(lambda: advisory_locks_held() == 1, timeout=30, message="the first request to hold its key")

            # when
            retry = pool.submit(place_in_own_thread).result(timeout=30)

        first = first.result(timeout=30)

    # then
    assert retry.status_code == 409
    assert retry.json() == {
        "error": {
            "code": "idempotency_key_in_use",
            "message": "A request with this Idempotency-Key is still in progress; retry once it has finished.",
        }
    }
    assert first.status_code == 201
    assert Order.objects.count() == 1
    assert place_with_key().content == first.content


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_place_exactly_one_order(catalog):
    responses = run_in_threads(8, lambda index: place_with_key())

    assert Order.objects.count() == 1
    assert {response.status_code for response in responses} <= {201, 409}
    created = [response for response in responses if response.status_code == 201]
    assert created
    assert {response.content for response in created} == {created[0].content}
    assert created[0].json()["id"] == str(Order.objects.get().id)
    assert IdempotencyKey.objects.count() == 1


@pytest.mark.django_db
def test_pruning_deletes_the_keys_past_their_time_to_live(catalog):
    place_with_key(key="old")
    place_with_key(key="recent")
    IdempotencyKey.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS + 1)
    )

    pruned = prune_idempotency_keys_task()

    assert pruned == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["recent"]


def test_beat_prunes_the_keys_hourly():
    entry = settings.CELERY_BEAT_SCHEDULE["prune-idempotency-keys"]

    assert entry["task"] == prune_idempotency_keys_task.name == "orders.prune_idempotency_keys"
    assert entry["schedule"] == 3600
    assert settings.IDEMPOTENCY_KEY_TTL_SECONDS == 24 * 60 * 60
