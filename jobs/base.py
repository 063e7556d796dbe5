"""`ReliableTask`, the base of every task: retry what can heal, count redeliveries, dead-letter what cannot heal."""

import logging
from typing import Any

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from core.errors import TransientError
from jobs import dead_letters, outbox

logger = logging.getLogger(__name__)

# What heals by itself: our adapters' timeouts, lost connections (database, sockets) and deadlocks.
TRANSIENT_ERRORS = (
    TransientError,
    OperationalError,
    InterfaceError,
    TimeoutError,
    ConnectionError,
    SoftTimeLimitExceeded,
)

# A message delivered this many times without finishing (its process died each time) is a poison message.
MAX_DELIVERIES = 5


class ReliableTask(Task):
    autoretry_for = TRANSIENT_ERRORS
    # Exponential backoff from 2 s with full jitter, capped below the broker's visibility timeout
    # (tests/test_celery_config.py checks the bound): 8 retries span about eight minutes.
    retry_backoff = 2
    retry_backoff_max = settings.TASK_MAX_DELAY_SECONDS
    retry_jitter = True
    max_retries = 8

    def before_start(self, task_id, args, kwargs):
        if not self.request.delivery_info.get("redelivered"):
            return
        deliveries = dead_letters.count_redelivery(task_id=task_id, task_name=self.name)
        if deliveries > MAX_DELIVERIES:
            reason = f"Delivered {deliveries} times without finishing: its process dies each time."
            logger.error("Poison message %s %s: %s", self.name, task_id, reason)
            self._dead_letter(task_id, args, kwargs, reason=reason, attempts=deliveries)
            raise Reject(reason, requeue=False)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        reason = f"{type(exc).__name__}: {exc}"
        self._dead_letter(task_id, args, kwargs, reason=reason, attempts=self.request.retries + 1)

    def _dead_letter(self, task_id, args, kwargs, *, reason: str, attempts: int) -> None:
        dead_letters.record_dead_letter(
            task_id=task_id, task_name=self.name, args=args, kwargs=kwargs, reason=reason, attempts=attempts
        )
        self.give_up(reason, **kwargs)

    def signature_from_request(self, request=None, args=None, kwargs=None, queue=None, **extra_options):
        """A retry is routed again, by the router from its arguments, rather than sent back to the exchange and
        routing key its delivery came from: a strict order's retry stays in its region, another order's may fall
        back to the public pool (Celery's retries have gone to the default queue with routers: celery/celery#8357)."""
        signature = super().signature_from_request(request, args, kwargs, queue=queue, **extra_options)
        for option in ("exchange", "routing_key"):
            signature.options.pop(option, None)
        return signature

    def give_up(self, reason: str, /, **kwargs: Any) -> None:
        """Record the final failure in the domain (e.g. mark the order failed), from the task's keyword arguments.
        Nothing by default."""

    def replay(self, **kwargs: Any) -> None:
        """Schedule this task again after ops asked to replay its dead letter (inside a transaction)."""
        outbox.publish_on_commit(outbox.task_message(self, **kwargs))


class EventConsumerTask(ReliableTask):
    """The base of a task that receives the outbox relay's batches of events (`OUTBOX_EVENT_CONSUMERS`).

    Once it has handled a batch, it confirms the events under its own name, so the relay does not send them to it
    again; a batch lost in Redis is sent again, to the consumers that did not confirm it only, after
    OUTBOX_EVENT_REDELIVER_AFTER_SECONDS, so its body must be idempotent per event id. A batch that gives up is
    dead-lettered and released: ops replay it, the relay does not send it again.
    """

    def on_success(self, retval, task_id, args, kwargs):
        outbox.confirm_events(consumer=self.name, event_ids=event_ids(kwargs))

    def give_up(self, reason: str, /, **kwargs: Any) -> None:
        outbox.abandon_events(consumer=self.name, event_ids=event_ids(kwargs))


def event_ids(kwargs: dict) -> list[str]:
    """The ids of the events in a consumer's task arguments, skipping what is not an event (a malformed batch)."""
    events = kwargs.get("events")
    if not isinstance(events, list):
        return []
    return [str(event["event_id"]) for event in events if isinstance(event, dict) and "event_id" in event]
