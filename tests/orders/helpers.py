"""What the orders tests share: placing an order through the service, reading its timeline and outbox rows."""

from jobs.models import OutboxMessage
from orders import services
from orders.models import Order
from orders.services import RequestedItem


def place(*, items=None, token="tok_visa", **overrides) -> Order:
    arguments = {
        "email": "ada@example.com",
        "region": "eu",
        "items": items or [RequestedItem("MUG-001", 2)],
        "payment_token": token,
    }
    return services.place_order(**(arguments | overrides)).order


def timeline(order: Order) -> list[str]:
    return list(order.events.order_by("created_at", "id").values_list("status", flat=True))


def outbox(kind: str, name: str) -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(kind=kind, name=name).order_by("created_at"))
