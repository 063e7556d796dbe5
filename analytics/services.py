import json

from django.db import connection

from analytics.models import Event


def record_events(*, events: list[dict]) -> int:
    """Store a batch of events, each once however often it is delivered; return how many were new."""
    if not events:
        return 0
    rows = [
        (
            event["event_id"],
            event["type"],
            event["data"].get("order_id"),
            json.dumps(event["data"]),
            event["occurred_at"],
        )
        for event in events
    ]
    placeholders = ", ".join(["(%s, %s, %s, %s, %s, now())"] * len(rows))
    with connection.cursor() as cursor:
        # ON CONFLICT DO NOTHING: a redelivered batch, or an event relayed twice, is stored once.
        cursor.execute(
            f"""
            INSERT INTO {Event._meta.db_table} (event_id, event_type, order_id, data, occurred_at, recorded_at)
            VALUES {placeholders}
            ON CONFLICT (event_id) DO NOTHING
            """,  # noqa: S608 - the table name is ours, the values are parameters
            [value for row in rows for value in row],
        )
        return cursor.rowcount
