"""The orders API: the catalog, placing an order, following it and cancelling it.

Reads call one selector. Writes call one service, then answer with the order as an `OrderDetails` (items and
timeline), the shape `selectors.get_order` reads, so every operation returns the order in the same shape. Errors
are raised, never rendered here (see core.api_errors). Order ids are random UUIDs, and no operation lists orders:
knowing an order's id is what lets one see it.
"""

from uuid import UUID

from django.conf import settings
from ninja import Router, Status
from ninja.decorators import decorate_view

from core.api_errors import ErrorOut
from core.ratelimit import rate_limited
from orders import selectors, services
from orders.idempotency import idempotent
from orders.schemas import OrderOut, PlaceOrderIn, ProductOut

router = Router(tags=["orders"])

# What an operation that reads a body may answer besides its own errors: a body too large (413), of another type
# than JSON (415), not parseable (400), or invalid (422).
BODY_ERRORS = {400: ErrorOut, 413: ErrorOut, 415: ErrorOut, 422: ErrorOut}

IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A unique key per order, such as a UUID. Retrying with the same key and the same body returns "
    "the first response (`Idempotent-Replayed: true`) and places nothing; another body with the key gets 422, "
    f"a retry while the first request runs gets 409. Keys are kept {settings.IDEMPOTENCY_KEY_TTL_SECONDS // 3600} "
    "hours.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}
RETRY_AFTER_HEADER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}


@router.get("/products", response=list[ProductOut], summary="The catalog")
def list_products(request):
    return selectors.list_products()


@router.post(
    "/orders",
    response={201: OrderOut, 409: ErrorOut, 429: ErrorOut, **BODY_ERRORS},
    summary="Place an order",
    url_name="orders",
    openapi_extra={"parameters": [IDEMPOTENCY_KEY_PARAMETER], "responses": {429: {"headers": RETRY_AFTER_HEADER}}},
)
# rate_limited wraps the operation, idempotent wraps both: a replayed response does not count as an order placed.
@decorate_view(rate_limited("place_order"), idempotent)
def place_order(request, payload: PlaceOrderIn):
    placed = services.place_order(
        email=payload.email,
        region=payload.region,
        items=payload.requested_items(),
        payment_token=payload.payment_token,
        push_topic=payload.push_topic,
    )
    return Status(201, placed)  # with its items and timeline, as place_order wrote them


@router.get(
    "/orders/{uuid:order_id}", response={200: OrderOut, 404: ErrorOut}, summary="Follow an order", url_name="order"
)
def get_order(request, order_id: UUID):
    return selectors.get_order(order_id=order_id)


@router.post(
    "/orders/{uuid:order_id}/cancel",
    response={200: OrderOut, 404: ErrorOut, 409: ErrorOut, 413: ErrorOut, 415: ErrorOut},
    summary="Cancel a pending order",
    url_name="cancel_order",
)
def cancel_order(request, order_id: UUID):
    services.cancel_order(order_id=order_id)
    return selectors.get_order(order_id=order_id)
