"""Operating the service over HTTP: health probes for Kubernetes, `/metrics`, and the staff-only ops page."""

from datetime import timedelta

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from jobs import routing
from ops import health
from ops.metrics import read_pipeline_snapshot, web_registry
from orders import selectors as order_selectors

# How much history the ops page's per-minute charts show.
OPS_WINDOW_MINUTES = 30
OPS_PERCENTILES = (0.5, 0.9, 0.99)


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Nothing else is checked, so an outage elsewhere never restarts web pods."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and Redis answer and every migration is applied; 503 (and why) when not."""
    problems = {
        "database": health.database_problem(),
        "redis": health.redis_problem(),
    }
    # Without a database there is no telling about migrations; say so once, under "database".
    problems["migrations"] = health.migrations_problem() if problems["database"] is None else "database unreachable"
    is_ready = not any(problems.values())
    body = {
        "status": "ready" if is_ready else "not ready",
        "checks": {name: problem or "ok" for name, problem in problems.items()},
    }
    return JsonResponse(body, status=200 if is_ready else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus' text format, read at scrape time from PostgreSQL and Redis."""
    return HttpResponse(generate_latest(web_registry), content_type=CONTENT_TYPE_LATEST)


def _regions(snapshot) -> list[dict]:
    """Each region's queue: whether its data must stay in it, messages waiting and in flight, live workers."""
    rows = []
    for region in [*settings.ORDER_REGIONS, routing.PUBLIC]:
        queue = routing.PUBLIC_FALLBACK if region == routing.PUBLIC else routing.region_queue(region)
        rows.append(
            {
                "region": region,
                "queue": queue,
                "strict": region != routing.PUBLIC and routing.is_strict(region),
                "waiting": (snapshot.queue_lengths or {}).get(queue),
                "in_flight": snapshot.workers.in_flight.get(queue) if snapshot.workers is not None else None,
                "workers": snapshot.workers.consumers.get(queue) if snapshot.workers is not None else None,
            }
        )
    return rows


@staff_member_required
@require_GET
def ops_page(request: HttpRequest) -> HttpResponse:
    """The live ops page: charts drawn in the browser from `ops_data`, polled every few seconds."""
    return render(request, "ops/index.html", {"window_minutes": OPS_WINDOW_MINUTES})


@staff_member_required
@require_GET
@never_cache
def ops_data(request: HttpRequest) -> JsonResponse:
    """The ops page's numbers: the `/metrics` snapshot, plus per-minute history from the order timelines."""
    now = timezone.now()
    since = (now - timedelta(minutes=OPS_WINDOW_MINUTES)).replace(second=0, microsecond=0)
    snapshot = read_pipeline_snapshot()
    transitions = order_selectors.count_transitions_per_minute(since=since)
    percentiles = order_selectors.get_latency_percentiles_per_minute(since=since, percentiles=OPS_PERCENTILES)
    return JsonResponse(
        {
            "time": now.isoformat(),
            "since": since.isoformat(),
            "sources_up": snapshot.sources_up,
            "queue_lengths": snapshot.queue_lengths,
            "in_flight": snapshot.workers.in_flight if snapshot.workers is not None else None,
            "regions": _regions(snapshot),
            "workers": (
                [
                    {
                        "hostname": status.hostname,
                        "alive": status.is_alive,
                        "queues": list(status.info.queues) if status.info else [],
                        "active": status.info.active if status.info else 0,
                    }
                    for status in snapshot.workers.workers
                ]
                if snapshot.workers is not None
                else None
            ),
            "dead_letters": snapshot.dead_letters,
            "orders_by_status": snapshot.orders_by_status,
            "outbox": (
                {
                    kind: {"unsent": backlog.unsent, "oldest_age_seconds": backlog.oldest_age_seconds}
                    for kind, backlog in snapshot.outbox.items()
                }
                if snapshot.outbox is not None
                else None
            ),
            "orders_per_minute": [
                {"minute": minute.isoformat(), "status": status, "count": count}
                for minute, status, count in transitions
            ],
            "latency_percentiles": {
                "percentiles": list(OPS_PERCENTILES),
                "minutes": [{"minute": minute.isoformat(), "seconds": values} for minute, values in percentiles],
            },
        }
    )
