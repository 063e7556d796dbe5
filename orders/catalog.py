"""The product catalog: loading products (`manage.py seed_catalog`), editing them, and thumbnails of their images.

An image is set by `set_product_image`, which schedules its thumbnail through the outbox in the same transaction.
`make_product_thumbnail` (the heavy pool's task) runs the WebAssembly sandbox on it outside any transaction and
records the outcome on the product, unless the image changed meanwhile: every write is guarded by the image's version.
"""

import logging
from collections.abc import Iterable
from decimal import Decimal
from functools import partial
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models.functions import Now

from core import sandbox
from jobs.outbox import publish_on_commit, task_message
from orders import tasks  # a module, not its names: tasks.py imports this module too
from orders.exceptions import InvalidProductImage, ProductNotFound
from orders.models import PRODUCT_THUMBNAIL_DIRECTORY, Product, ThumbnailStatus

logger = logging.getLogger(__name__)

# What a failure is recorded as when the task itself gave up (retries exhausted, the module missing), not the sandbox.
THUMBNAIL_GAVE_UP = "gave_up"
# A thumbnail task found its image's file gone while the image was still current (storage lost it).
IMAGE_MISSING = "image_missing"
# What a new image resets and a thumbnail task's outcome writes.
THUMBNAIL_FIELDS = [
    "thumbnail",
    "thumbnail_status",
    "thumbnail_width",
    "thumbnail_height",
    "thumbnail_error_code",
    "thumbnail_error_reason",
    "thumbnail_finished_at",
]


@transaction.atomic
def seed_catalog(*, products: list[dict]) -> tuple[int, int]:
    """Create or update products by SKU; stock is set only for new products, and an `image` (a file's path) only for
    products without one, through `set_product_image` like any other. Returns (created, updated)."""
    created = 0
    for product in products:
        fields = {key: value for key, value in product.items() if key != "image"}
        row, was_created = Product.objects.update_or_create(
            sku=product["sku"],
            defaults={"name": product["name"], "price": product["price"], "currency": product["currency"]},
            create_defaults=fields,
        )
        created += was_created
        if product.get("image") and not row.image:
            path = Path(product["image"])
            with path.open("rb") as image:
                set_product_image(product_id=row.pk, image=File(image, name=path.name))
    return created, len(products) - created


@transaction.atomic
def update_product(*, product_id: int, name: str, price: Decimal) -> Product:
    """Rename or reprice a product; orders already placed keep the price they were placed at."""
    product = _locked_product(product_id)
    product.name, product.price = name, price
    product.save(update_fields=["name", "price"])
    return product


def check_product_image(*, image: File) -> sandbox.ImageHeader:
    """Refuse an upload the sandbox would refuse before decoding (too many bytes, not a PNG or JPEG, too many pixels
    declared), with the sandbox's own reason; the heavy pool checks again with its own settings."""
    try:
        if image.size > settings.THUMBNAIL_MAX_INPUT_BYTES:  # before reading it all
            raise sandbox.ImageTooLarge(
                f"{image.size:,} bytes, more than the {settings.THUMBNAIL_MAX_INPUT_BYTES:,} accepted"
            )
        image.seek(0)
        header = sandbox.check_image(
            image=image.read(),
            max_input_bytes=settings.THUMBNAIL_MAX_INPUT_BYTES,
            max_input_pixels=settings.THUMBNAIL_MAX_INPUT_PIXELS,
        )
    except sandbox.SandboxError as refused:
        raise InvalidProductImage(
            f"Not an image we can use: {refused.reason}.", fields={"image": refused.reason}
        ) from None
    finally:
        image.seek(0)
    return header


@transaction.atomic
def set_product_image(*, product_id: int, image: File | None) -> Product:
    """Replace the product's image (None removes it) and schedule its thumbnail once this transaction commits.

    The previous image and thumbnail files are deleted after the commit; a task still busy with them writes nothing.
    """
    product = _locked_product(product_id)
    if image is not None:
        check_product_image(image=image)
    replaced = [name for name in (product.image.name, product.thumbnail.name) if name]
    product.image_version += 1
    if image is None:
        product.image.name = ""
        product.thumbnail_status = ThumbnailStatus.NONE
    else:
        # Written to storage now: the task must find the file once the row commits. Should the transaction roll back,
        # the file is left over (an orphan, never shown).
        product.image.save(Path(image.name or "image").name, image, save=False)
        product.thumbnail_status = ThumbnailStatus.PENDING
    product.thumbnail.name = ""
    product.thumbnail_width = product.thumbnail_height = None
    product.thumbnail_error_code = product.thumbnail_error_reason = ""
    product.thumbnail_finished_at = None
    product.save(update_fields=[*THUMBNAIL_FIELDS, "image", "image_version"])
    if image is not None:
        publish_on_commit(
            task_message(tasks.make_thumbnail_task, product_id=product.pk, image_version=product.image_version)
        )
    if replaced:
        transaction.on_commit(partial(_delete_files, replaced))
    return product


def make_thumbnail_png(*, image: bytes) -> sandbox.Thumbnail:
    """A PNG of `image` that fits 300x300, made in the sandbox with the limits of the settings (the task and
    `manage.py thumbnail` both come here); a SandboxError says why not."""
    return sandbox.make_thumbnail(
        image=image,
        fuel=settings.THUMBNAIL_FUEL_LIMIT,
        memory_bytes=settings.THUMBNAIL_MEMORY_LIMIT_BYTES,
        deadline_seconds=settings.THUMBNAIL_DEADLINE_SECONDS,
        max_input_bytes=settings.THUMBNAIL_MAX_INPUT_BYTES,
        max_input_pixels=settings.THUMBNAIL_MAX_INPUT_PIXELS,
        module_path=Path(settings.THUMBNAIL_WASM_PATH),
    )


def prepare_thumbnail_sandbox() -> None:
    """Compile the sandbox's engine and module in this process now (a heavy-pool child, after the fork)."""
    sandbox.prepare_sandbox(module_path=Path(settings.THUMBNAIL_WASM_PATH))


def make_product_thumbnail(*, product_id: int, image_version: int) -> str | None:
    """Thumbnail the product's image in the sandbox and record the outcome; return the thumbnail status recorded, or
    None when there was nothing to do (the image changed since the task was scheduled, or the thumbnail is made).

    A refusal or a stop of the sandbox is final and recorded with its code and reason; a missing module
    (SandboxUnavailable) is a deployment error and propagates. No transaction is open while the sandbox runs.
    """
    product = Product.objects.filter(pk=product_id).first()
    if product is None or product.image_version != image_version or product.has_thumbnail:
        return None
    try:
        with product.image.open("rb") as file:
            image = file.read()
    except FileNotFoundError:
        reason = f"the image file {product.image.name} is missing from storage"
        return record_thumbnail_failure(
            product_id=product_id, image_version=image_version, code=IMAGE_MISSING, reason=reason
        )
    try:
        thumbnail = make_thumbnail_png(image=image)
    except sandbox.SandboxError as error:
        logger.info(
            "No thumbnail for product %s (image %d): %s: %s", product_id, image_version, error.code, error.reason
        )
        return record_thumbnail_failure(
            product_id=product_id, image_version=image_version, code=error.code, reason=error.reason
        )
    return _store_thumbnail(product_id=product_id, image_version=image_version, thumbnail=thumbnail)


def _store_thumbnail(*, product_id: int, image_version: int, thumbnail: sandbox.Thumbnail) -> str | None:
    # The file first, then the row that points to it: a product never names a file that is not there.
    name = default_storage.save(
        f"{PRODUCT_THUMBNAIL_DIRECTORY}/{product_id}-{image_version}.png", ContentFile(thumbnail.png)
    )
    with transaction.atomic():
        product = Product.objects.select_for_update().filter(pk=product_id).first()
        # The image changed while the sandbox ran, or a duplicate delivery of this task stored its thumbnail first.
        if product is None or product.image_version != image_version or product.has_thumbnail:
            transaction.on_commit(partial(_delete_files, [name]))
            return None
        product.thumbnail.name = name
        product.thumbnail_status = ThumbnailStatus.READY
        product.thumbnail_width, product.thumbnail_height = thumbnail.width, thumbnail.height
        product.thumbnail_error_code = product.thumbnail_error_reason = ""
        product.thumbnail_finished_at = Now()
        product.save(update_fields=THUMBNAIL_FIELDS)
    logger.info(
        "Thumbnail of product %s (image %d): %dx%d, %d bytes in %.2f s",
        product_id,
        image_version,
        thumbnail.width,
        thumbnail.height,
        len(thumbnail.png),
        thumbnail.seconds,
    )
    return ThumbnailStatus.READY


def record_thumbnail_failure(*, product_id: int, image_version: int, code: str, reason: str) -> str | None:
    """Record why the image of `image_version` has no thumbnail; not once the image changed or got its thumbnail."""
    recorded = (
        Product.objects.filter(pk=product_id, image_version=image_version)
        .exclude(thumbnail_status=ThumbnailStatus.READY)
        .update(
            thumbnail_status=ThumbnailStatus.FAILED,
            thumbnail_error_code=code,
            thumbnail_error_reason=reason,
            thumbnail_finished_at=Now(),
        )
    )
    return ThumbnailStatus.FAILED if recorded else None


def _locked_product(product_id: int) -> Product:
    product = Product.objects.select_for_update().filter(pk=product_id).first()
    if product is None:
        raise ProductNotFound(f"Product {product_id} does not exist.")
    return product


def _delete_files(names: Iterable[str]) -> None:
    """Delete files that no row names any more (after the commit that let go of them); a failure is only logged."""
    for name in names:
        try:
            default_storage.delete(name)
        except OSError as error:
            logger.warning("Could not delete %s from storage: %r", name, error)
