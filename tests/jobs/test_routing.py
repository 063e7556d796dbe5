"""The router (jobs/routing.py): a function of the message, against the real Redis and the worker registry."""

import time

import pytest
from celery.app.task import Context

from jobs import registry, routing
from jobs.routing import UnroutableTask, route_task
from orders.tasks import process_order_task
from proj.celery import app as celery_app

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_region_states(monkeypatch):
    """Each test reads the regions afresh (the router caches them a couple of seconds per process)."""
    monkeypatch.setattr(routing, "_region_states", {})


def alive(hostname: str, *queues: str) -> None:
    """A worker of the registry, alive and consuming `queues`, as its heartbeat would say."""
    with celery_app.connection_for_write() as connection:
        info = registry.WorkerInfo(hostname=hostname, queues=queues)
        registry.heartbeat(connection.default_channel.client, info, ttl=30)


def queue_of(region: str | None) -> str:
    return route_task("orders.process_order", (), {"order_id": "x", "region": region}, {})["queue"]


def test_a_strict_region_is_sent_to_its_queue_whether_or_not_it_has_a_worker(settings):
    settings.STRICT_RESIDENCY_REGIONS = ["eu"]
    assert queue_of("eu") == "cloud.eu"
    settings.PUBLIC_FALLBACK_BACKLOG = 0  # every region overloaded: a strict one still keeps its data
    alive("public@test", "public_fallback")
    assert queue_of("eu") == "cloud.eu"


def test_another_region_goes_public_without_a_live_worker_or_with_a_backlog_and_home_otherwise(settings):
    assert queue_of("us") == "public_fallback"

    alive("us@test", "cloud.us")
    routing._region_states.clear()
    assert queue_of("us") == "cloud.us"

    settings.PUBLIC_FALLBACK_BACKLOG = 2
    with celery_app.connection_for_write() as connection:
        connection.default_channel.client.lpush("cloud.us", "a", "b")
    routing._region_states.clear()
    assert queue_of("us") == "public_fallback"


def test_the_router_reads_a_region_at_most_every_few_seconds():
    assert queue_of("us") == "public_fallback"
    alive("us@test", "cloud.us")

    assert queue_of("us") == "public_fallback"  # the cached view, a moment old
    routing._region_states["us"] = routing.RegionState(consumers=0, waiting=0, read_at=time.monotonic() - 60)
    assert queue_of("us") == "cloud.us"


@pytest.mark.parametrize("region", [None, "", "mars"])
def test_an_unknown_region_never_produces_a_message(region):
    with pytest.raises(UnroutableTask):
        celery_app.send_task("orders.process_order", kwargs={"order_id": "x", "region": region})

    with celery_app.connection_for_write() as connection:
        client = connection.default_channel.client
        assert [client.llen(queue) for queue in routing.queue_names()] == [0] * len(routing.queue_names())


def test_a_retry_is_routed_again_from_its_arguments():
    # given: a delivery from the US queue
    request = Context(
        args=[],
        kwargs={"order_id": "x", "region": "us"},
        delivery_info={"exchange": "cloud.us", "routing_key": "cloud.us", "priority": None},
        retries=0,
    )

    # when: the task retries, and the US region has no worker left
    signature = process_order_task.signature_from_request(request, countdown=2)
    route = celery_app.amqp.router.route(signature.options, signature.task, signature.args, signature.kwargs)

    # then: the retry goes where the router says now (public), not back where the delivery came from
    assert "routing_key" not in signature.options
    assert route["queue"].name == "public_fallback"
    strict = process_order_task.signature_from_request(
        Context(args=[], kwargs={"order_id": "x", "region": "eu"}, delivery_info={"routing_key": "cloud.eu"}),
        countdown=2,
    )
    assert celery_app.amqp.router.route(strict.options, strict.task, strict.args, strict.kwargs)["queue"].name == (
        "cloud.eu"
    )


def test_a_worker_region_consumes_exactly_its_queue():
    assert routing.queues_of_worker_region("eu") == ["cloud.eu"]
    assert routing.queues_of_worker_region("public") == ["public_fallback"]
    with pytest.raises(UnroutableTask, match="WORKER_REGION='mars'"):
        routing.queues_of_worker_region("mars")


def test_processed_in_is_the_worker_s_region_else_the_region_of_the_message_s_queue(settings):
    assert [routing.processed_in(queue) for queue in ("cloud.eu", "public_fallback", "analytics", None)] == [
        "eu",
        "public",
        "",
        "",
    ]
    settings.WORKER_REGION = "public"  # a message moved from cloud.us keeps its routing key
    assert routing.processed_in("cloud.us") == "public"


def test_what_waits_in_a_region_with_no_worker_for_a_while_moves_to_the_public_pool_and_strict_stays(settings):
    settings.PUBLIC_FALLBACK_AFTER_SECONDS = 30
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        client = channel.client
        client.lpush("cloud.us", "us-1", "us-2")
        client.lpush("cloud.eu", "eu-1")
        # The US queue's last consumer heartbeated a minute ago; the AP one a moment ago.
        client.hset(registry.QUEUES_CONSUMED_KEY, mapping={"cloud.us": time.time() - 60, "cloud.ap": time.time()})
        client.lpush("cloud.ap", "ap-1")

        moved = routing.move_stranded_messages(channel)

        assert moved == {"us": 2}
        assert client.lrange("public_fallback", 0, -1) == [b"us-2", b"us-1"]  # oldest first out, as it was
        assert (client.llen("cloud.us"), client.llen("cloud.eu"), client.llen("cloud.ap")) == (0, 1, 1)
