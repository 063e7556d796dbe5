"""What the orders API reads and writes. Money is a decimal string ("12.50"), never a float.

Input schemas check the shape (types, lengths, no unknown fields); the service checks the meaning (a known SKU,
a configured region, a deliverable email) and names the offending field the same way, e.g. `items[0].sku`.
"""

from datetime import datetime
from decimal import Decimal
from typing import Annotated
from uuid import UUID

from django.conf import settings
from django.urls import reverse
from ninja import Field, Schema
from pydantic import AfterValidator, ConfigDict
from pydantic_core import PydanticCustomError

from orders.models import OrderStatus
from orders.selectors import OrderDetails
from orders.services import RequestedItem


def _without_control_characters(value: str) -> str:
    # PostgreSQL cannot store NUL, and no SKU, email, region or token contains a control character.
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in value):
        raise PydanticCustomError("control_character", "Control characters are not allowed.")
    return value


# The pattern documents the rule in the OpenAPI schema; the validator enforces it with a readable message.
PlainText = Annotated[
    str, AfterValidator(_without_control_characters), Field(json_schema_extra={"pattern": r"^[^\x00-\x1f\x7f]*$"})
]


class ProductOut(Schema):
    sku: str
    name: str
    price: Decimal = Field(description="Decimal string, e.g. `12.50`.")
    currency: str = Field(description="ISO 4217 code.")
    in_stock: bool

    @staticmethod
    def resolve_in_stock(product) -> bool:
        return product.stock > 0


class OrderItemIn(Schema):
    model_config = ConfigDict(extra="forbid", strict=True)

    sku: PlainText = Field(min_length=1, max_length=64, examples=["MUG-001"])
    quantity: int = Field(ge=1, description="Units of the product; the service caps each product's total.")


class PlaceOrderIn(Schema):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "region": "eu",
                    "items": [{"sku": "MUG-001", "quantity": 2}, {"sku": "TEE-001", "quantity": 1}],
                    "payment_token": "tok_visa",
                }
            ]
        },
    )

    email: PlainText = Field(min_length=1, max_length=254, json_schema_extra={"format": "email"})
    # The regions are named in the schema, so clients (and Schemathesis' valid examples) use one; the service
    # still refuses any other with 422 and its own message.
    region: PlainText = Field(
        min_length=1,
        max_length=16,
        description="The region the order is delivered to and processed in (its data stays there if the region "
        "says so).",
        json_schema_extra={"enum": list(settings.ORDER_REGIONS)},
    )
    items: list[OrderItemIn] = Field(min_length=1)
    payment_token: PlainText = Field(
        min_length=1,
        max_length=64,
        description="The payment method. Sandbox: `tok_visa` succeeds, `tok_chargeDeclined` is declined, "
        "`tok_timeout` succeeds after the bank timed out twice.",
    )
    push_topic: PlainText = Field(
        "", max_length=64, description="An ntfy topic to notify when the order completes or fails (optional)."
    )

    def requested_items(self) -> list[RequestedItem]:
        return [RequestedItem(sku=item.sku, quantity=item.quantity) for item in self.items]


class OrderItemOut(Schema):
    sku: str = Field(alias="product.sku")
    name: str = Field(alias="product.name")
    quantity: int
    unit_price: Decimal = Field(description="Decimal string: the price when the order was placed.")


class StatusChangeOut(Schema):
    status: OrderStatus
    at: datetime = Field(alias="created_at")
    note: str


class OrderOut(Schema):
    """An `OrderDetails`: the order's own fields, its items and its timeline."""

    id: UUID = Field(alias="order.id")
    status: OrderStatus = Field(alias="order.status")
    total: Decimal = Field(alias="order.total", description="Decimal string, computed from the catalog's prices.")
    currency: str = Field(alias="order.currency")
    items: list[OrderItemOut]
    created_at: datetime = Field(alias="order.created_at")
    status_url: str = Field(description="Where to follow the order: GET it until its status is final.")
    timeline: list[StatusChangeOut] = Field(description="Every status the order went through.")
    failure_reason: str | None = Field(description="Why the order failed (e.g. the payment was declined).")
    processed_in: str | None = Field(
        description="Where the order was processed: its region, or `public` (the public pool, for a region that "
        "may use it); null until a worker has taken it."
    )

    @staticmethod
    def resolve_status_url(details: OrderDetails, context) -> str:
        return context["request"].build_absolute_uri(reverse("api:order", kwargs={"order_id": details.order.pk}))

    @staticmethod
    def resolve_failure_reason(details: OrderDetails) -> str | None:
        return details.order.failure_reason or None

    @staticmethod
    def resolve_processed_in(details: OrderDetails) -> str | None:
        return details.order.processed_in or None
