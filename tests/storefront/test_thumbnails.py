"""The catalog shows each product's thumbnail made in the sandbox, and our placeholder when it has none or it failed."""

import importlib
import re
from decimal import Decimal

import pytest
from django.urls import clear_url_caches

from orders import catalog
from tests.factories import ProductFactory
from tests.images import dimensions, picture, upload

pytestmark = pytest.mark.django_db

PLACEHOLDER = (
    '<img class="product-image placeholder" src="/static/orders/no-image.svg" width="300" height="300" alt="">'
)


def text_of(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


def test_each_product_shows_its_thumbnail_or_the_placeholder(client, media_root, thumbnail_module):
    # given a product with a thumbnail, one whose thumbnail failed, one waiting for it and one without an image
    mug = ProductFactory(sku="MUG-001", name="Stoneware mug", price=Decimal("12.50"))
    catalog.set_product_image(product_id=mug.pk, image=upload(picture(900, 600), "mug.jpg"))
    catalog.make_product_thumbnail(product_id=mug.pk, image_version=1)
    broken = ProductFactory(sku="TEE-001", name="Organic cotton T-shirt", price=Decimal("24.00"))
    catalog.set_product_image(product_id=broken.pk, image=upload(picture(900, 600)[:5000], "tee.jpg"))
    catalog.make_product_thumbnail(product_id=broken.pk, image_version=1)
    waiting = ProductFactory(sku="CAP-001", name="Wool cap")
    catalog.set_product_image(product_id=waiting.pk, image=upload(picture(900, 600), "cap.jpg"))
    ProductFactory(sku="LAMP-001", name="Desk lamp", price=Decimal("49.00"), stock=0)

    # when
    response = client.get("/")

    # then
    html = response.content.decode()
    images = re.findall(r'<img class="product-image[^>]*>', html)
    assert images == [
        PLACEHOLDER,  # CAP-001, waiting
        PLACEHOLDER,  # LAMP-001, no image
        f'<img class="product-image" src="/media/products/thumbnails/{mug.pk}-1.png" width="300" height="200" '
        'alt="" loading="lazy">',
        PLACEHOLDER,  # TEE-001, failed: its image was truncated
    ]
    # The texts the storefront's tests read are unchanged beside the pictures.
    assert "Stoneware mug MUG-001 12.50 EUR" in text_of(response)
    assert "Desk lamp LAMP-001 49.00 EUR Out of stock" in text_of(response)


def test_the_placeholder_is_our_own_static_file(client):
    response = client.get("/static/orders/no-image.svg")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert b'aria-label="No picture yet"' in b"".join(response.streaming_content)


def test_thumbnails_are_served_from_media_in_development(client, settings, media_root, thumbnail_module):
    product = ProductFactory()
    catalog.set_product_image(product_id=product.pk, image=upload(picture(640, 480, "PNG"), "photo.png"))
    catalog.make_product_thumbnail(product_id=product.pk, image_version=1)
    settings.DEBUG = True  # as under `make run`; pytest-django runs with DEBUG off, when nothing serves media
    import proj.urls

    try:
        importlib.reload(proj.urls)
        clear_url_caches()
        response = client.get(f"/media/products/thumbnails/{product.pk}-1.png")
    finally:
        settings.DEBUG = False
        importlib.reload(proj.urls)
        clear_url_caches()

    assert response.status_code == 200
    assert dimensions(b"".join(response.streaming_content)) == ("PNG", 300, 225)
    assert client.get(f"/media/products/thumbnails/{product.pk}-1.png").status_code == 404  # DEBUG off again
