from django.db import models
from django.db.models.functions import Now


class Event(models.Model):
    """A domain event as analytics received it. `event_id` makes a redelivered event count once."""

    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=64)
    # The order the event is about, copied out of `data` for reports; not a foreign key (separate service).
    order_id = models.UUIDField(null=True, blank=True)
    data = models.JSONField(default=dict)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["event_type", "occurred_at"], name="event_type_time_idx")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"
