# One receipt per consumer: the consumers an event was sent to and still awaits are listed on its row.

import django.contrib.postgres.fields
from django.conf import settings
from django.db import migrations, models
from django.db.models.functions import Now


def await_the_configured_consumers(apps, schema_editor):
    """An event confirmed so far was confirmed for every consumer: nobody awaits it. One sent and not confirmed
    awaits every consumer configured now, so the relay sends it again to each after the redelivery delay."""
    OutboxMessage = apps.get_model("jobs", "OutboxMessage")
    # The rows the old partial index (outbox_unconfirmed_event_idx) holds: a handful, whatever the outbox's size.
    OutboxMessage.objects.filter(kind="event", sent_at__isnull=False, delivered_at__isnull=True).update(
        awaiting_consumers=list(settings.OUTBOX_EVENT_CONSUMERS)
    )


def confirm_what_nobody_awaits(apps, schema_editor):
    """Back to one receipt for all: an event no consumer awaits counts as confirmed, or it would be sent again."""
    OutboxMessage = apps.get_model("jobs", "OutboxMessage")
    OutboxMessage.objects.filter(
        kind="event", sent_at__isnull=False, delivered_at__isnull=True, awaiting_consumers=[]
    ).update(delivered_at=Now())


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0002_outbox_event_receipts'),
    ]

    operations = [
        # With a constant default PostgreSQL adds the column without rewriting the table.
        migrations.AddField(
            model_name='outboxmessage',
            name='awaiting_consumers',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.CharField(max_length=200), blank=True, default=list),
        ),
        migrations.RunPython(await_the_configured_consumers, confirm_what_nobody_awaits, elidable=False),
    ]
