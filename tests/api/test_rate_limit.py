"""Too many orders from one client: 429 with Retry-After, counted in Redis."""

import pytest
from django.test import Client

from core import ratelimit
from orders.models import Order
from tests.api.conftest import ORDER, post_json

pytestmark = pytest.mark.django_db

# 1_000_000_010 s is 10 s before the end of a 60-second window (1_000_000_020 is a multiple of 60).
NOW = 1_000_000_010.0


@pytest.fixture
def frozen_clock(monkeypatch) -> None:
    monkeypatch.setattr(ratelimit.time, "time", lambda: NOW)


def place_from(address: str, **headers):
    return post_json(Client(REMOTE_ADDR=address), "/api/orders", ORDER, **headers)


def test_orders_past_the_limit_are_429_with_retry_after(catalog, settings, frozen_clock):
    settings.RATE_LIMITS = {"place_order": (3, 60)}

    allowed = [place_from("203.0.113.7") for _ in range(3)]
    refused = place_from("203.0.113.7")

    assert [response.status_code for response in allowed] == [201, 201, 201]
    assert refused.status_code == 429
    assert refused["Retry-After"] == "10"
    assert refused.json() == {
        "error": {
            "code": "rate_limited",
            "message": "Too many requests from this client: at most 3 every 60 seconds. Try again in 10 seconds.",
            "details": {"retry_after": 10},
        }
    }
    assert Order.objects.count() == 3


def test_each_client_has_its_own_count(catalog, settings):
    settings.RATE_LIMITS = {"place_order": (1, 60)}

    first = place_from("203.0.113.7")
    other_client = place_from("198.51.100.2")
    first_again = place_from("203.0.113.7")

    assert (first.status_code, other_client.status_code, first_again.status_code) == (201, 201, 429)


def test_the_count_starts_again_in_the_next_window(catalog, settings, monkeypatch):
    settings.RATE_LIMITS = {"place_order": (1, 60)}
    monkeypatch.setattr(ratelimit.time, "time", lambda: NOW)
    place_from("203.0.113.7")
    refused = place_from("203.0.113.7")

    monkeypatch.setattr(ratelimit.time, "time", lambda: NOW + 10)
    next_window = place_from("203.0.113.7")

    assert (refused.status_code, next_window.status_code) == (429, 201)


def test_behind_trusted_proxies_the_client_is_the_address_they_recorded(catalog, settings):
    settings.RATE_LIMITS = {"place_order": (1, 60)}
    settings.RATE_LIMIT_TRUSTED_PROXIES = 1

    # The proxy (10.0.0.1) appends the client's address; what the client wrote before it is not trusted.
    first = place_from("10.0.0.1", **{"X-Forwarded-For": "1.2.3.4, 203.0.113.7"})
    same_client_lying = place_from("10.0.0.1", **{"X-Forwarded-For": "5.6.7.8, 203.0.113.7"})
    other_client = place_from("10.0.0.1", **{"X-Forwarded-For": "198.51.100.2"})

    assert (first.status_code, same_client_lying.status_code, other_client.status_code) == (201, 429, 201)


def test_without_trusted_proxies_x_forwarded_for_is_ignored(catalog, settings):
    settings.RATE_LIMITS = {"place_order": (1, 60)}

    first = place_from("203.0.113.7", **{"X-Forwarded-For": "1.2.3.4"})
    second = place_from("203.0.113.7", **{"X-Forwarded-For": "5.6.7.8"})

    assert (first.status_code, second.status_code) == (201, 429)


def test_only_placing_orders_is_limited(catalog, settings):
    settings.RATE_LIMITS = {"place_order": (1, 60)}
    order_id = place_from("203.0.113.7").json()["id"]

    reads = [Client(REMOTE_ADDR="203.0.113.7").get(f"/api/orders/{order_id}") for _ in range(3)]

    assert [response.status_code for response in reads] == [200, 200, 200]


def test_when_redis_is_unreachable_orders_are_still_placed(catalog, settings, monkeypatch, caplog):
    settings.RATE_LIMITS = {"place_order": (1, 60)}
    settings.RATE_LIMIT_REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    ratelimit._redis.cache_clear()
    try:
        responses = [place_from("203.0.113.7") for _ in range(2)]
    finally:
        ratelimit._redis.cache_clear()

    assert [response.status_code for response in responses] == [201, 201]
    assert "Rate limit 'place_order' not enforced, Redis is unavailable" in caplog.text
