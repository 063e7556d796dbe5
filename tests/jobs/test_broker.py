"""Our Redis transport (jobs/broker.py) against the real Redis: what it records of held messages, and a close that
survives a lost connection."""

import pytest
from kombu import Connection, Consumer, Queue

from jobs import broker, registry
from proj.celery import app as celery_app

pytestmark = pytest.mark.django_db


def take(connection: Connection, count: int) -> list:
    """Consume `count` messages of the EU orders' queue without acknowledging them."""
    taken = []
    channel = connection.channel()
    channel.basic_qos(prefetch_count=count)
    consumer = Consumer(channel, queues=[Queue("cloud.eu", routing_key="cloud.eu")], accept=["json"])
    consumer.register_callback(lambda body, message: taken.append(message))
    consumer.consume()
    while len(taken) < count:
        connection.drain_events(timeout=5)
    return taken


def test_a_message_is_held_by_the_worker_that_took_it_until_it_is_acknowledged():
    celery_app.send_task("orders.process_order", kwargs={"order_id": "a", "region": "eu"}, task_id="held-a")
    celery_app.send_task("orders.process_order", kwargs={"order_id": "b", "region": "eu"}, task_id="held-b")
    registry.set_holder("worker@test")
    try:
        with Connection(celery_app.conf.broker_url, transport=broker.Transport) as connection:
            first, second = take(connection, 2)
            client = connection.default_channel.client
            held = {
                tag.decode(): queue.decode() for tag, queue in client.hgetall(registry.held_key("worker@test")).items()
            }
            assert held == {first.delivery_tag: "cloud.eu", second.delivery_tag: "cloud.eu"}

            first.ack()

            assert client.hkeys(registry.held_key("worker@test")) == [second.delivery_tag.encode()]
            assert client.hexists("unacked", second.delivery_tag)
    finally:
        registry.set_holder(None)


def test_closing_a_channel_whose_connection_is_gone_does_not_crash_and_keeps_what_it_held():
    # given: a channel holding a message, whose transport lost its connection (kombu sets its client to None)
    celery_app.send_task("orders.process_order", kwargs={"order_id": "c", "region": "eu"}, task_id="held-c")
    registry.set_holder("worker@test")
    try:
        connection = Connection(celery_app.conf.broker_url, transport=broker.Transport)
        (message,) = take(connection, 1)
        channel = message.channel
        channel.connection.client = None

        # when: Celery closes it after a lost connection (kombu 5.7.0 raised AttributeError on `None.hostname` here)
        channel.close()

        # then: nothing was restored through the dead connection; the registry still knows who holds it
        with Connection(celery_app.conf.broker_url) as other:
            client = other.default_channel.client
            assert client.hexists("unacked", message.delivery_tag)
            assert client.hexists(registry.held_key("worker@test"), message.delivery_tag)
    finally:
        registry.set_holder(None)
