"""Our Redis transport: kombu's, with every message a worker reserves recorded as held by that worker.

Selected by CELERY_BROKER_TRANSPORT (the broker URL stays `redis://...`). kombu emulates acknowledgements on Redis:
a message a worker takes goes into the `unacked` hash (and `unacked_index`, by time) in one pipeline, and leaves
them when it is acknowledged, in another. Ours adds one command to each of those pipelines, the held-by-worker
record of jobs/registry.py, so that a worker that dies has its messages put back in seconds by the others rather
than after the visibility timeout; it costs no extra round trip. Everything else is kombu's.
"""

import time

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

from jobs import registry


class QoS(kombu_redis.QoS):
    def append(self, message, delivery_tag) -> None:
        """What kombu records of a message it delivers (unacked hash and index), and who holds it, in one pipeline."""
        exchange, routing_key = message.delivery_info["exchange"], message.delivery_info["routing_key"]
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(self.unacked_key, delivery_tag, dumps([message._raw, exchange, routing_key]))
            if (holder := registry.holder()) is not None:
                # Our routing keys are the queue names (jobs/routing.py): the queue it came from, for the metrics.
                pipe.hset(registry.held_key(holder), delivery_tag, routing_key)
            pipe.execute()
        virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self, delivery_tag, pipe=None):
        """kombu's removal on acknowledge, reject and restore, with the held-by record in the same pipeline."""
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        if (holder := registry.holder()) is not None:
            pipe.hdel(registry.held_key(holder), delivery_tag)
        return pipe


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
