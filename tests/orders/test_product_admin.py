"""The product admin: name, price and image edited through the catalog's services; SKU and stock left alone."""

from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import OutboxMessage
from orders import catalog
from orders.models import Product
from tests.conftest import queue_length
from tests.factories import ProductFactory
from tests.images import picture, upload

pytestmark = pytest.mark.django_db

JPEG = picture(800, 600)


@pytest.fixture
def mug() -> Product:
    return ProductFactory(sku="MUG-001", name="Stoneware mug", price=Decimal("12.50"), stock=7)


def change(admin_client, product: Product, **fields):
    data = {"name": product.name, "price": str(product.price), "_save": "Save"} | fields
    return admin_client.post(f"/admin/orders/product/{product.pk}/change/", data)


def test_an_image_uploaded_in_the_admin_is_stored_and_its_thumbnail_scheduled_after_commit(
    admin_client, mug, media_root, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = change(admin_client, mug, image=SimpleUploadedFile("mug.jpg", JPEG, content_type="image/jpeg"))
        published_before_commit = queue_length("heavy")

    assert response.status_code == 302
    mug.refresh_from_db()
    assert (mug.image.name, mug.image_version, mug.thumbnail_status) == ("products/images/mug.jpg", 1, "pending")
    assert (media_root / "products/images/mug.jpg").read_bytes() == JPEG
    assert list(OutboxMessage.objects.values_list("name", "payload")) == [
        ("orders.make_thumbnail", {"product_id": mug.pk, "image_version": 1})
    ]
    assert (published_before_commit, len(callbacks), queue_length("heavy")) == (0, 1, 1)


def test_an_upload_that_is_no_image_is_refused_beside_the_field_and_nothing_changes(admin_client, mug, media_root):
    response = change(admin_client, mug, name="Renamed", image=SimpleUploadedFile("mug.gif", b"GIF89a" + bytes(64)))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"image": ["neither a PNG nor a JPEG (unknown signature)"]}
    mug.refresh_from_db()
    assert (mug.name, mug.image.name, mug.image_version) == ("Stoneware mug", "", 0)
    assert not OutboxMessage.objects.exists()
    assert not media_root.exists()


def test_name_and_price_change_without_a_thumbnail_and_sku_and_stock_cannot(admin_client, mug):
    response = change(admin_client, mug, name="Big mug", price="14.00", sku="HACKED", stock="1000")

    assert response.status_code == 302
    mug.refresh_from_db()
    assert (mug.sku, mug.name, mug.price, mug.stock) == ("MUG-001", "Big mug", Decimal("14.00"), 7)
    assert not OutboxMessage.objects.exists()
    form = admin_client.get(f"/admin/orders/product/{mug.pk}/change/").context["adminform"].form
    assert sorted(form.fields) == ["image", "name", "price"]


def test_a_negative_price_is_refused_by_the_tables_own_rule(admin_client, mug):
    response = change(admin_client, mug, price="-1.00")

    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        "Constraint “product_price_not_negative” is violated."
    ]
    mug.refresh_from_db()
    assert mug.price == Decimal("12.50")


def test_clearing_the_image_removes_it_and_schedules_nothing(admin_client, mug, media_root):
    catalog.set_product_image(product_id=mug.pk, image=upload(JPEG, "mug.jpg"))

    response = change(admin_client, mug, **{"image-clear": "on"})

    assert response.status_code == 302
    mug.refresh_from_db()
    assert (mug.image.name, mug.image_version, mug.thumbnail_status) == ("", 2, "none")
    assert OutboxMessage.objects.filter(name="orders.make_thumbnail").count() == 1  # the upload's, not the clearing's


def test_products_are_listed_with_their_thumbnail_but_neither_added_nor_deleted_here(
    admin_client, mug, media_root, thumbnail_module
):
    catalog.set_product_image(product_id=mug.pk, image=upload(JPEG, "mug.jpg"))
    catalog.make_product_thumbnail(product_id=mug.pk, image_version=1)
    ProductFactory(sku="TEE-001")

    listing = admin_client.get("/admin/orders/product/")

    html = listing.content.decode()
    assert listing.status_code == 200
    assert (
        f'<img src="/media/products/thumbnails/{mug.pk}-1.png" width="300" height="225" alt="" '
        'style="max-width: 100px; height: auto">'
    ) in html
    assert [row.sku for row in listing.context["cl"].result_list] == ["MUG-001", "TEE-001"]
    assert admin_client.get("/admin/orders/product/add/").status_code == 403
    assert admin_client.get(f"/admin/orders/product/{mug.pk}/delete/").status_code == 403
    assert listing.context["action_form"] is None  # no actions at all: Django's "delete selected" went too
