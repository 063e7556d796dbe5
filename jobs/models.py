import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Now


class OutboxMessageKind(models.TextChoices):
    TASK = "task"  # one task message, published right after commit
    EVENT = "event"  # a domain event, published by the relay in batches to OUTBOX_EVENT_CONSUMERS


class OutboxMessage(models.Model):
    """The intent to publish a Celery message, written in the same transaction as the change that causes it.

    `id` doubles as the Celery task id, so a message published twice (fast path and relay) is one task to
    Flower, the result backend and the delivery counter.
    """

    Kind = OutboxMessageKind

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # The task name for TASK rows; the event type (`order_placed`, ...) for EVENT rows.
    name = models.CharField(max_length=200)
    # Task keyword arguments, or the event's data: JSON primitives only.
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(db_default=Now())
    # When the row was published; for EVENT rows, last sent to a consumer that owed its receipt.
    sent_at = models.DateTimeField(null=True, blank=True)
    # EVENT rows: the consumers (OUTBOX_EVENT_CONSUMERS) it was sent to whose receipt has not come yet. A consumer
    # removes itself once it has stored the event (jobs.base.EventConsumerTask), or given up on it (its dead letter
    # keeps the event for ops). A batch message can be lost after it was published (Redis restarted without its
    # append-only file, or a worker killed between taking a message and recording it unacknowledged): the relay
    # sends such an event again, to these consumers only. On the row itself rather than one receipt row per
    # consumer: sending and confirming stay one UPDATE each, as with a single receipt, and the relay's scan reads
    # only the rows still awaited (outbox_awaited_event_idx), however large the history grows.
    awaiting_consumers = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    # EVENT rows: when the last consumer it was sent to confirmed it (never set when one gave up on it instead).
    delivered_at = models.DateTimeField(null=True, blank=True)
    publish_attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            # The relay scans only unsent rows, oldest first; sent rows stay out of the index.
            models.Index(fields=["created_at"], condition=models.Q(sent_at__isnull=True), name="outbox_unsent_idx"),
            # Events sent and still awaited by a consumer: a handful at any time (the batches in flight, any lost
            # ones), scanned by the relay every OUTBOX_RELAY_INTERVAL_SECONDS for batches lost in Redis.
            models.Index(
                fields=["sent_at"],
                condition=models.Q(kind="event", sent_at__isnull=False) & ~models.Q(awaiting_consumers=[]),
                name="outbox_awaited_event_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} ({'sent' if self.sent_at else 'unsent'})"


class DeadLetter(models.Model):
    """A task that gave up (retries exhausted, a bug, or a poison message): kept for ops to replay or discard."""

    task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    reason = models.TextField()
    # How many times the message had been delivered or retried when it was dead-lettered.
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.task_name} {self.task_id}"


class TaskDelivery(models.Model):
    """How many times Redis delivered one task message. Redis keeps no such count, so a message that kills its
    worker every time would otherwise loop forever. Only redeliveries are counted: a first delivery costs nothing.
    """

    task_id = models.CharField(max_length=255, primary_key=True)
    task_name = models.CharField(max_length=200)
    deliveries = models.PositiveIntegerField()
    last_delivered_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"{self.task_name} {self.task_id}: {self.deliveries} deliveries"
