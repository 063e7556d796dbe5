from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db.models import Count, DecimalField, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, TruncDate

from analytics.models import Event

# The order events analytics receives, and the order status each one records.
STATUS_BY_ORDER_EVENT = {
    "order_placed": "placed",
    "order_completed": "completed",
    "order_failed": "failed",
    "order_cancelled": "cancelled",
}


@dataclass(frozen=True)
class DailyOrderSummary:
    day: date
    status: str
    currency: str
    orders: int
    revenue: Decimal


def summarize_orders_per_day(*, since: datetime, until: datetime | None = None) -> list[DailyOrderSummary]:
    """Orders and their total value per day (UTC), status and currency, from the events analytics recorded.

    Analytics reads only its own events, never the orders tables: it could run as a separate service.
    """
    events = Event.objects.filter(event_type__in=STATUS_BY_ORDER_EVENT, occurred_at__gte=since)
    if until is not None:
        events = events.filter(occurred_at__lt=until)
    rows = (
        events.annotate(
            day=TruncDate("occurred_at"),
            currency=KeyTextTransform("currency", "data"),
            total=Cast(KeyTextTransform("total", "data"), DecimalField(max_digits=14, decimal_places=2)),
        )
        .values_list("day", "event_type", "currency")
        .annotate(orders=Count("pk"), revenue=Sum("total"))
        .order_by("day", "event_type", "currency")
    )
    summaries = [
        DailyOrderSummary(
            day=day,
            status=STATUS_BY_ORDER_EVENT[event_type],
            currency=currency or "",
            orders=orders,
            revenue=revenue or Decimal("0.00"),
        )
        for day, event_type, currency, orders, revenue in rows
    ]
    order = list(STATUS_BY_ORDER_EVENT.values())
    return sorted(summaries, key=lambda summary: (summary.day, order.index(summary.status), summary.currency))
