"""The JSON API: django-ninja under /api/, with its OpenAPI schema at /api/openapi.json and docs at /api/docs."""

import json

from ninja import NinjaAPI
from ninja.parser import Parser

from orders.api import router as orders_router


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


class StrictJsonParser(Parser):
    """JSON as RFC 8259 defines it: Python's parser also accepts NaN and Infinity, which no other client reads."""

    def parse_body(self, request):
        return json.loads(request.body, parse_constant=_reject_constant)


class ShopApi(NinjaAPI):
    def on_exception(self, request, exc):
        # Every error leaves through core.api_errors.ApiErrorMiddleware, which renders the project's one error
        # shape, also for errors that never pass through django-ninja (unknown URL, body refused, ...).
        raise exc


api = ShopApi(
    title="Shop orders",
    version="1",
    description='Place orders and follow them. Every error is `{"error": {"code", "message", "fields"?}}`.',
    urls_namespace="api",
    parser=StrictJsonParser(),
)
api.add_router("", orders_router)
