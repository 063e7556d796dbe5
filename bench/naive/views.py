"""The article's API: the same contract as ours (POST /api/orders, GET /api/orders/<id>), without idempotency."""

import json

from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from bench.naive.services import create_order
from orders.models import Order


def _order_json(order: Order, request: HttpRequest) -> dict:
    return {
        "id": str(order.pk),
        "status": order.status,
        "total": str(order.total),
        "currency": order.currency,
        "items": [
            {"sku": item.product.sku, "quantity": item.quantity} for item in order.items.select_related("product")
        ],
        "created_at": order.created_at.isoformat() if hasattr(order.created_at, "isoformat") else None,
        "status_url": request.build_absolute_uri(f"/api/orders/{order.pk}"),
    }


@csrf_exempt
@require_POST
def place_order_view(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    order = create_order(
        email=data["email"], region=data["region"], items=data["items"], payment_token=data["payment_token"]
    )
    order.refresh_from_db(fields=["created_at"])
    return JsonResponse(_order_json(order, request), status=201)


@require_GET
def order_view(request: HttpRequest, order_id) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    return JsonResponse(_order_json(order, request) | {"timeline": []})
