from django.db import models
from django.db.models.functions import Now


class NotificationChannel(models.TextChoices):
    EMAIL = "email"
    PUSH = "push"


class NotificationKind(models.TextChoices):
    """What a notification is about; each has its templates `notifications/<kind>.txt` and `<kind>_subject.txt`."""

    ORDER_CONFIRMATION = "order_confirmation"
    ORDER_FAILED = "order_failed"


class NotificationStatus(models.TextChoices):
    SENDING = "sending"  # claimed by a worker; another may take over once the claim is stale
    SENT = "sent"
    SKIPPED = "skipped"  # nowhere to send it (no push server configured)
    FAILED = "failed"  # gave up after retries, or the recipient was refused


class Notification(models.Model):
    """One message to a customer about an order, sent at most once per (order, channel, kind) in effect."""

    Channel = NotificationChannel
    Kind = NotificationKind
    Status = NotificationStatus

    # The order's public id. Not a foreign key: notifications talk to orders only through tasks, as a separate
    # service would, and must not break when orders are archived.
    order_id = models.UUIDField()
    channel = models.CharField(max_length=8, choices=Channel.choices)
    kind = models.CharField(max_length=40, choices=Kind.choices)
    recipient = models.CharField(max_length=254)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.SENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Who claimed it, `celery@host:pid`: a claim whose worker is gone is taken over at once, not after it goes stale.
    claimed_by = models.CharField(max_length=255, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # What makes a task that runs twice send once.
            models.UniqueConstraint(fields=["order_id", "channel", "kind"], name="notification_once_per_order"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} by {self.channel} to {self.recipient} ({self.status})"
