from decimal import Decimal

import pytest

from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db


def test_the_catalog_lists_every_product_with_its_price_as_a_decimal_string(client):
    ProductFactory(sku="TEE-001", name="Organic cotton T-shirt", price=Decimal("24.00"), stock=0)
    ProductFactory(sku="MUG-001", name="Stoneware mug", price=Decimal("12.50"), stock=3)

    response = client.get("/api/products")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response.json() == [
        {"sku": "MUG-001", "name": "Stoneware mug", "price": "12.50", "currency": "EUR", "in_stock": True},
        {"sku": "TEE-001", "name": "Organic cotton T-shirt", "price": "24.00", "currency": "EUR", "in_stock": False},
    ]


def test_an_empty_catalog_is_an_empty_list(client):
    response = client.get("/api/products")

    assert (response.status_code, response.json()) == (200, [])
