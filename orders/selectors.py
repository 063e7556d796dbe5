"""Reads about orders: one order with its items and timeline, the catalog, and the numbers ops look at."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import TruncMinute

from orders.exceptions import OrderNotFound
from orders.models import Order, OrderEvent, OrderItem, Product


@dataclass(frozen=True)
class OrderDetails:
    """An order with its items (by SKU, with their products) and its status timeline: what the API and the order
    page show. `get_order` reads it; `services.place_order` returns the one it wrote, so nothing is read back."""

    order: Order
    items: list[OrderItem]
    timeline: list[OrderEvent]


def get_order(*, order_id) -> OrderDetails:
    """The order with its items (and their products) and its status timeline."""
    order = (
        Order.objects.prefetch_related(
            Prefetch("items", queryset=OrderItem.objects.select_related("product").order_by("product__sku")),
            Prefetch("events", queryset=OrderEvent.objects.order_by("created_at", "id")),
        )
        .filter(pk=order_id)
        .first()
    )
    if order is None:
        raise OrderNotFound(f"Order {order_id} does not exist.")
    return OrderDetails(order=order, items=list(order.items.all()), timeline=list(order.events.all()))


def list_products() -> QuerySet[Product]:
    return Product.objects.order_by("sku")


def list_failed_orders(*, since: datetime | None = None) -> QuerySet[Order]:
    """Failed orders, oldest failure first; with `since`, only those that failed at or after it."""
    orders = Order.objects.filter(status=Order.Status.FAILED).order_by("updated_at", "pk")
    return orders.filter(updated_at__gte=since) if since else orders


def count_orders_by_status() -> dict[str, int]:
    """How many orders are in each status; every status is present, with 0 when none is in it."""
    counts = dict(Order.objects.values_list("status").annotate(count=Count("pk")).order_by())
    return {status: counts.get(status, 0) for status in Order.Status.values}


@dataclass(frozen=True)
class LatencyHistogram:
    """Cumulative counts of orders whose placement-to-final time is at most each bound, as Prometheus expects."""

    bounds: tuple[float, ...]
    cumulative_counts: tuple[int, ...]
    count: int
    sum_seconds: float


def get_placement_to_final_latency(*, bounds: tuple[float, ...]) -> dict[str, LatencyHistogram]:
    """Seconds from placement to the final status, as a histogram per final status (all of them present).

    An order's final transition is its last update (`updated_at`), so no timeline join is needed. One statement
    counts every bucket; it reads every final order, which is why the scrape interval, not each page view,
    should set how often it runs.
    """
    latency = ExpressionWrapper(F("updated_at") - F("created_at"), output_field=DurationField())
    buckets = {
        f"le_{index}": Count("pk", filter=Q(latency__lte=timedelta(seconds=bound)))
        for index, bound in enumerate(bounds)
    }
    rows = (
        Order.objects.filter(status__in=Order.FINAL_STATUSES)
        .annotate(latency=latency)
        .values("status")
        .annotate(count=Count("pk"), total=Sum("latency"), **buckets)
        .order_by()
    )
    histograms: dict[str, LatencyHistogram] = {
        status: LatencyHistogram(bounds=bounds, cumulative_counts=(0,) * len(bounds), count=0, sum_seconds=0.0)
        for status in Order.FINAL_STATUSES
    }
    for row in cast(Iterable[dict[str, Any]], rows):
        histograms[row["status"]] = LatencyHistogram(
            bounds=bounds,
            cumulative_counts=tuple(row[f"le_{index}"] for index in range(len(bounds))),
            count=row["count"],
            sum_seconds=row["total"].total_seconds(),
        )
    return histograms


def count_transitions_per_minute(*, since: datetime) -> list[tuple[datetime, str, int]]:
    """(minute, status, orders that entered the status in that minute) since a moment, from the timelines."""
    return list(
        OrderEvent.objects.filter(created_at__gte=since)
        .annotate(minute=TruncMinute("created_at"))
        .values_list("minute", "status")
        .annotate(count=Count("pk"))
        .order_by("minute", "status")
    )


def get_latency_percentiles_per_minute(
    *, since: datetime, percentiles: tuple[float, ...] = (0.5, 0.9, 0.99)
) -> list[tuple[datetime, list[float]]]:
    """(minute, [seconds at each percentile]) of placement-to-final time for orders that became final each minute.

    The same measure as the latency histogram (`updated_at - created_at` of final orders), exact rather than
    bucketed; PostgreSQL's `percentile_cont` interpolates between orders.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT date_trunc('minute', updated_at) AS minute,
                   percentile_cont(%s::float8[]) WITHIN GROUP (
                       ORDER BY EXTRACT(EPOCH FROM updated_at - created_at)
                   )
            FROM {Order._meta.db_table}
            WHERE status = ANY(%s) AND updated_at >= %s
            GROUP BY minute
            ORDER BY minute
            """,  # noqa: S608 - the table name is ours, the values are parameters
            [list(percentiles), list(Order.FINAL_STATUSES), since],
        )
        return [(minute, [float(value) for value in values]) for minute, values in cursor.fetchall()]
