from decimal import Decimal

import pytest

from tests.factories import ProductFactory

ORDER = {
    "email": "ada@example.com",
    "region": "eu",
    "items": [{"sku": "MUG-001", "quantity": 2}, {"sku": "TEE-001", "quantity": 1}],
    "payment_token": "tok_visa",
}


@pytest.fixture
def catalog():
    return [
        ProductFactory(sku="MUG-001", name="Stoneware mug", price=Decimal("12.50"), stock=10),
        ProductFactory(sku="TEE-001", name="Organic cotton T-shirt", price=Decimal("24.00"), stock=5),
    ]


def post_json(client, path: str, body, **headers):
    """POST `body` as JSON (a str is sent as it is, for bodies that are not valid JSON)."""
    return client.post(path, body, content_type="application/json", headers=headers)
