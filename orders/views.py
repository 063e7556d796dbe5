"""The storefront's pages. Like the API, they hold no logic of their own: selectors read, services write."""

from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from core.errors import ApplicationError
from core.ratelimit import enforce_rate_limit
from orders import selectors, services
from orders.exceptions import OrderNotFound
from orders.forms import PlaceOrderForm


@require_http_methods(["GET", "POST"])
def catalog(request: HttpRequest) -> HttpResponse:
    """The catalog and the order form; a valid order is placed and followed on its own page."""
    form = PlaceOrderForm(request.POST if request.method == "POST" else None, products=selectors.list_products())
    if not form.is_bound:
        return render(request, "orders/catalog.html", {"form": form})
    error = None
    if form.is_valid():
        try:
            enforce_rate_limit(request, scope="place_order")
            placed = services.place_order(
                email=form.cleaned_data["email"],
                region=form.cleaned_data["region"],
                items=form.requested_items(),
                payment_token=form.cleaned_data["payment_token"],
            )
        except ApplicationError as raised:
            error = raised
            form.add_service_error(error)
        else:
            return redirect("storefront:order", order_id=placed.order.pk)
    response = render(request, "orders/catalog.html", {"form": form}, status=error.status if error else 422)
    for name, value in (error.extra_headers if error else {}).items():
        response[name] = value
    return response


@require_GET
def order_page(request: HttpRequest, order_id: UUID) -> HttpResponse:
    """The order's status and timeline, updated live by polling the API until the status is final."""
    try:
        details = selectors.get_order(order_id=order_id)
    except OrderNotFound as error:
        raise Http404(error.message) from error
    context = {
        "order": details.order,
        "items": details.items,
        "timeline": details.timeline,
        "status_url": reverse("api:order", kwargs={"order_id": details.order.pk}),
    }
    return render(request, "orders/order.html", context)
