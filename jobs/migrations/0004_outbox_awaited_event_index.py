# The relay's index of events still awaited by a consumer, in place of the single receipt's index.

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # CONCURRENTLY, so building the index over the whole outbox (mostly events) never blocks the inserts of orders
    # being placed meanwhile; PostgreSQL refuses it inside a transaction.
    atomic = False

    dependencies = [
        ('jobs', '0003_outbox_awaiting_consumers'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='outboxmessage',
            index=models.Index(condition=models.Q(('kind', 'event'), ('sent_at__isnull', False), models.Q(('awaiting_consumers', []), _negated=True)), fields=['sent_at'], name='outbox_awaited_event_idx'),
        ),
        RemoveIndexConcurrently(
            model_name='outboxmessage',
            name='outbox_unconfirmed_event_idx',
        ),
        # Statistics for the new column at once: until autovacuum's next analyze the planner guesses that most rows
        # are awaited (measured on 1.3 million rows with 200 awaited: a parallel scan of 6 ms per backlog read on
        # /metrics, 0.15 ms once analyzed).
        migrations.RunSQL("ANALYZE jobs_outboxmessage", reverse_sql=migrations.RunSQL.noop, elidable=True),
    ]
