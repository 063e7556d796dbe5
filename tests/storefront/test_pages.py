"""The storefront: the catalog with its order form, and the page that follows an order."""

import re
import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client

from core import ratelimit
from core.errors import InvalidInput
from orders import services
from orders.forms import PlaceOrderForm
from orders.models import Order, Product
from orders.services import RequestedItem
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def mug():
    return ProductFactory(sku="MUG-001", name="Stoneware mug", price=Decimal("12.50"), stock=10)


@pytest.fixture
def tee():
    return ProductFactory(sku="TEE-001", name="Organic cotton T-shirt", price=Decimal("24.00"), stock=5)


def order_form(*quantities: tuple[Product, int], **fields) -> dict:
    data = {"email": "ada@example.com", "region": "eu", "payment_token": "tok_visa", **fields}
    data.update({f"quantity_{product.pk}": str(quantity) for product, quantity in quantities})
    return data


def text_of(response) -> str:
    """The page's text, tags stripped and whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


def test_the_catalog_offers_every_product_a_region_and_the_sandbox_cards_by_name(client, mug, tee):
    lamp = ProductFactory(sku="LAMP-001", name="Desk lamp", price=Decimal("49.00"), stock=0)

    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in html
    text = text_of(response)
    assert "Stoneware mug MUG-001 12.50 EUR" in text
    assert "Organic cotton T-shirt TEE-001 24.00 EUR" in text
    assert "Desk lamp LAMP-001 49.00 EUR Out of stock" in text
    assert (
        f'<input type="number" name="quantity_{mug.pk}" value="0" min="0" max="100" id="id_quantity_{mug.pk}">' in html
    )
    assert f'<input type="number" name="quantity_{lamp.pk}" value="0" min="0" max="100" disabled' in html
    assert [choice[0] for choice in response.context["form"].fields["region"].choices] == ["eu", "us", "ap"]
    for label in ("Card that succeeds", "Card that is declined", "Card whose bank is slow"):
        assert label in text


def test_placing_an_order_redirects_to_its_page(client, mug, tee):
    response = client.post("/", order_form((mug, 2), (tee, 1), payment_token="tok_chargeDeclined"))

    order = Order.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/orders/{order.id}/"
    assert (order.email, order.region, order.payment_token, order.total) == (
        "ada@example.com",
        "eu",
        "tok_chargeDeclined",
        Decimal("49.00"),
    )
    assert sorted(order.items.values_list("product__sku", "quantity")) == [("MUG-001", 2), ("TEE-001", 1)]


def test_an_invalid_field_is_shown_next_to_it_and_nothing_is_placed(client, mug):
    response = client.post("/", order_form((mug, 1), email="ada@"))

    assert response.status_code == 422
    html = response.content.decode()
    assert '<ul class="errorlist" id="id_email_error"><li>Enter a valid email address.</li></ul>' in html
    assert re.search(r'<input type="email" name="email" value="ada@"[^>]*aria-invalid="true"', html)
    assert re.search(r'<input type="email"[^>]*aria-describedby="id_email_helptext id_email_error"', html)
    assert '<a href="#id_email">Email: Enter a valid email address.</a>' in html
    assert not Order.objects.exists()


def test_a_quantity_out_of_range_is_shown_next_to_its_product(client, mug, tee):
    response = client.post("/", order_form((mug, 1), (tee, 101)))

    assert response.status_code == 422
    form = response.context["form"]
    assert form.errors == {
        f"quantity_{tee.pk}": ["Ensure this value is less than or equal to 100."],
    }
    assert not Order.objects.exists()


def test_an_order_needs_a_product_which_is_said_along_with_the_other_errors(client, mug):
    response = client.post("/", order_form((mug, 0), email="ada@"))

    assert response.status_code == 422
    assert response.context["form"].errors == {
        "__all__": ["Choose a quantity of at least one product."],
        "email": ["Enter a valid email address."],
    }
    assert "Your order was not placed" in text_of(response)
    assert not Order.objects.exists()


def test_an_error_the_service_raises_is_shown_next_to_the_product_it_names(mug, tee):
    form = PlaceOrderForm(order_form((mug, 0), (tee, 3)), products=[mug, tee])
    assert form.is_valid()

    form.add_service_error(InvalidInput("The order is invalid.", fields={"items[0].quantity": "Too many."}))

    assert form.errors == {f"quantity_{tee.pk}": ["Too many."]}


def test_an_error_the_service_raises_without_a_field_is_shown_above_the_form(mug):
    form = PlaceOrderForm(order_form((mug, 1)), products=[mug])
    assert form.is_valid()

    form.add_service_error(InvalidInput("All products of one order must be priced in one currency."))

    assert form.non_field_errors() == ["All products of one order must be priced in one currency."]


def test_the_form_is_protected_against_cross_site_requests(mug):
    response = Client(enforce_csrf_checks=True).post("/", order_form((mug, 1)))

    assert response.status_code == 403
    assert not Order.objects.exists()


def test_the_api_and_the_storefront_share_the_order_rate_limit(mug, settings, monkeypatch):
    settings.RATE_LIMITS = {"place_order": (1, 60)}
    monkeypatch.setattr(ratelimit.time, "time", lambda: 1_000_000_010.0)  # 10 s before a window ends
    api_order = Client(REMOTE_ADDR="203.0.113.7").post(
        "/api/orders",
        {
            "email": "ada@example.com",
            "region": "eu",
            "items": [{"sku": "MUG-001", "quantity": 1}],
            "payment_token": "tok_visa",
        },
        content_type="application/json",
    )

    response = Client(REMOTE_ADDR="203.0.113.7").post("/", order_form((mug, 1)))

    assert api_order.status_code == 201
    assert response.status_code == 429
    assert response["Retry-After"] == "10"
    assert response.context["form"].non_field_errors() == [
        "Too many requests from this client: at most 1 every 60 seconds. Try again in 10 seconds."
    ]
    assert Order.objects.count() == 1


def test_the_order_page_shows_the_status_timeline_and_follows_it_live(client, mug):
    order = services.place_order(
        email="ada@example.com", region="eu", items=[RequestedItem("MUG-001", 2)], payment_token="tok_visa"
    ).order

    response = client.get(f"/orders/{order.id}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-status-url="/api/orders/{order.id}"' in html
    assert 'data-status="pending"' in html
    assert '<script src="/static/orders/order.js" defer></script>' in html
    # Without JavaScript the page reloads itself until the order is final.
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' in html
    text = text_of(response)
    assert f"Order number {order.id}" in text
    assert "Status Pending Updating as it happens…" in text
    assert "Stoneware mug 2 12.50 EUR" in text
    assert "Total 25.00 EUR" in text
    assert "Why it failed" not in text.replace("hidden", "") or "data-failure hidden" in html


def test_a_declined_order_shows_why_and_stops_following(client, mug, sandbox):
    order = services.place_order(
        email="ada@example.com", region="eu", items=[RequestedItem("MUG-001", 2)], payment_token="tok_chargeDeclined"
    ).order
    services.process_order(order_id=str(order.id))

    response = client.get(f"/orders/{order.id}/")

    html = response.content.decode()
    assert 'data-status="failed"' in html
    assert "<noscript>" not in html
    assert '<span class="updating" data-updating hidden>' in html
    assert "<p data-failure-reason>Payment declined: Your card was declined.</p>" in html
    assert re.search(
        r"Pending \S+ UTC Processing \S+ UTC Failed \S+ UTC Payment declined: Your card was declined.",
        text_of(response),
    )


def test_an_unknown_order_page_is_404(client):
    response = client.get(f"/orders/{uuid.uuid4()}/")

    assert response.status_code == 404


def test_static_files_are_served_by_whitenoise_from_collectstatic_in_production(settings, tmp_path, mug):
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    settings.WHITENOISE_USE_FINDERS = False
    settings.WHITENOISE_AUTOREFRESH = False
    # The admin's and the API docs' files are collected the same way; leaving them out keeps the test quick.
    call_command("collectstatic", interactive=False, verbosity=0, ignore_patterns=["admin", "ninja"])
    client = Client()  # a new handler, so WhiteNoise reads the files collected above

    page = client.get("/").content.decode()
    stylesheet = re.search(r'href="(/static/orders/storefront\.[0-9a-f]{12}\.css)"', page).group(1)
    response = client.get(stylesheet, headers={"Accept-Encoding": "gzip"})

    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip"
    assert response["Cache-Control"] == "max-age=315360000, public, immutable"
