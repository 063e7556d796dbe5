"""Product images and their thumbnails: scheduled through the outbox only after commit, made in the sandbox by the
task, each outcome recorded on the product, and a task for an image that changed since writing nothing."""

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import wasmtime
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from core import sandbox
from jobs.models import DeadLetter, OutboxMessage
from orders import catalog
from orders.exceptions import InvalidProductImage
from orders.models import Product
from orders.tasks import make_thumbnail_task
from proj.celery import app as celery_app
from tests.conftest import queue_length
from tests.factories import ProductFactory
from tests.helpers import wait_for
from tests.images import dimensions, picture, png_header_only, upload

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
Status = Product.ThumbnailStatus
JPEG = picture(800, 600)
# The 2 MiB limit refuses some allocation of the decoder's, whose exact size is the decoder's business.
MEMORY_REFUSED = re.compile(
    r"the module needed more than its 2,097,152 bytes of memory \(an allocation of [\d,]+ bytes was refused\)"
)
LARGE_JPEG = picture(2000, 1500)
TRAPPING_MODULE = """
(module
  (memory (export "memory") 17)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "thumbnail") (param i32 i32) (result i64) unreachable))
"""


def thumbnail_messages() -> list[tuple[dict, bool]]:
    """The outbox's thumbnail tasks: (arguments, sent), oldest first."""
    rows = OutboxMessage.objects.filter(name="orders.make_thumbnail").order_by("created_at", "id")
    return [(row.payload, row.sent_at is not None) for row in rows]


def stored(media_root: Path, directory: str) -> list[str]:
    return sorted(path.name for path in (media_root / "products" / directory).glob("*"))


def with_image(data: bytes = JPEG, name: str = "mug.jpg") -> Product:
    """A product whose image was just set (its thumbnail task is in the outbox, not run)."""
    product = ProductFactory()
    catalog.set_product_image(product_id=product.pk, image=upload(data, name))
    product.refresh_from_db()
    return product


def test_setting_an_image_stores_it_and_schedules_its_thumbnail_on_the_heavy_queue_after_commit(
    media_root, django_capture_on_commit_callbacks
):
    product = ProductFactory()

    with django_capture_on_commit_callbacks(execute=True):
        catalog.set_product_image(product_id=product.pk, image=upload(JPEG, "mug.jpg"))
        # inside the transaction: the row is written, nothing is published
        assert thumbnail_messages() == [({"product_id": product.pk, "image_version": 1}, False)]
        assert queue_length("heavy") == 0

    product.refresh_from_db()
    assert (product.image.name, product.image_version, product.thumbnail_status) == (
        "products/images/mug.jpg",
        1,
        Status.PENDING,
    )
    assert (media_root / "products/images/mug.jpg").read_bytes() == JPEG
    assert thumbnail_messages() == [({"product_id": product.pk, "image_version": 1}, True)]
    assert (queue_length("heavy"), queue_length("cloud.eu")) == (1, 0)
    with celery_app.connection_for_write() as broker:
        message = broker.SimpleQueue("heavy").get(timeout=1)
        assert message.headers["task"] == "orders.make_thumbnail"
        assert message.decode()[1] == {"product_id": product.pk, "image_version": 1}


def test_an_image_set_in_a_transaction_that_rolls_back_schedules_nothing(
    media_root, django_capture_on_commit_callbacks
):
    product = ProductFactory()

    def set_image_then_fail() -> None:
        with transaction.atomic():
            catalog.set_product_image(product_id=product.pk, image=upload(JPEG, "mug.jpg"))
            raise RuntimeError("the admin's transaction failed after the image")

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError):
        set_image_then_fail()

    product.refresh_from_db()
    assert (product.image.name, product.image_version, product.thumbnail_status) == ("", 0, Status.NONE)
    assert callbacks == []
    assert thumbnail_messages() == []
    assert queue_length("heavy") == 0


SMALL_JPEG = picture(50, 50)


@pytest.mark.parametrize(
    ("data", "max_input_bytes", "reason"),
    [
        (b"GIF89a" + bytes(100), 32 << 20, "neither a PNG nor a JPEG (unknown signature)"),
        (
            png_header_only(100_000, 100_000),
            32 << 20,
            "the PNG header declares 100000x100000 = 10,000,000,000 pixels, more than the 25,000,000 accepted",
        ),
        (SMALL_JPEG, 1000, f"{len(SMALL_JPEG):,} bytes, more than the 1,000 accepted"),
    ],
    ids=["gif", "decompression-bomb", "too-many-bytes"],
)
def test_an_upload_the_sandbox_would_refuse_is_refused_before_anything_is_stored(
    media_root, settings, data, max_input_bytes, reason
):
    settings.THUMBNAIL_MAX_INPUT_BYTES = max_input_bytes
    product = ProductFactory()

    with pytest.raises(InvalidProductImage) as refused:
        catalog.set_product_image(product_id=product.pk, image=upload(data, "upload.bin"))

    assert (refused.value.status, refused.value.code, refused.value.fields) == (
        422,
        "invalid_product_image",
        {"image": reason},
    )
    product.refresh_from_db()
    assert (product.image.name, product.image_version, product.thumbnail_status) == ("", 0, Status.NONE)
    assert thumbnail_messages() == []
    assert not media_root.exists()


def test_the_task_stores_a_png_that_fits_and_records_its_size_and_when(media_root, thumbnail_module):
    product = with_image()

    result = make_thumbnail_task(product_id=product.pk, image_version=1)

    assert result == "ready"
    product.refresh_from_db()
    assert (product.thumbnail_status, product.thumbnail.name) == (
        Status.READY,
        f"products/thumbnails/{product.pk}-1.png",
    )
    assert (product.thumbnail_width, product.thumbnail_height) == (300, 225)
    assert dimensions((media_root / product.thumbnail.name).read_bytes()) == ("PNG", 300, 225)
    assert timezone.now() - timedelta(minutes=1) < product.thumbnail_finished_at <= timezone.now()
    assert (product.thumbnail_error_code, product.thumbnail_error_reason) == ("", "")


@pytest.mark.parametrize(
    ("image", "limits", "code", "reason"),
    [
        (JPEG[: len(JPEG) // 2], {}, "not_an_image", "the image data is corrupt or truncated"),
        (
            JPEG,
            {"THUMBNAIL_MAX_INPUT_PIXELS": 100_000},
            "image_too_large",
            "the JPEG header declares 800x600 = 480,000 pixels, more than the 100,000 accepted",
        ),
        (JPEG, {"THUMBNAIL_FUEL_LIMIT": 1000}, "fuel_exhausted", "the module used all of its 1,000 units of fuel"),
        (
            JPEG,
            {"THUMBNAIL_MEMORY_LIMIT_BYTES": 2 << 20},
            "memory_exhausted",
            MEMORY_REFUSED,
        ),
        (
            LARGE_JPEG,
            {"THUMBNAIL_DEADLINE_SECONDS": 0.01},
            "deadline_exceeded",
            "the module ran past its deadline of 0.01 s",
        ),
        (
            JPEG,
            {"THUMBNAIL_WASM_PATH": "trapping"},
            "module_trapped",
            "the module trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
    ],
    ids=["corrupt", "too-many-pixels", "fuel", "memory", "deadline", "trap"],
)
def test_each_refusal_or_stop_of_the_sandbox_is_recorded_on_the_product_and_never_retried(
    media_root, settings, tmp_path, thumbnail_module, image, limits, code, reason
):
    # given an image accepted at upload, and the heavy pool's limits (lower, or a hostile module) when the task runs
    product = with_image(image, "photo.jpg")
    if limits.get("THUMBNAIL_WASM_PATH") == "trapping":
        (tmp_path / "trapping.wasm").write_bytes(wasmtime.wat2wasm(TRAPPING_MODULE))
        limits = {"THUMBNAIL_WASM_PATH": str(tmp_path / "trapping.wasm")}
    for name, value in limits.items():
        setattr(settings, name, value)

    # when
    result = make_thumbnail_task(product_id=product.pk, image_version=1)

    # then a final outcome: the task returned (nothing raised, so nothing to retry or dead-letter) having recorded it
    assert result == "failed"
    product.refresh_from_db()
    assert (product.thumbnail_status, product.thumbnail_error_code, product.thumbnail.name) == (Status.FAILED, code, "")
    if isinstance(reason, re.Pattern):
        assert reason.fullmatch(product.thumbnail_error_reason), product.thumbnail_error_reason
    else:
        assert product.thumbnail_error_reason == reason
    assert product.thumbnail_finished_at is not None
    assert DeadLetter.objects.count() == 0
    assert stored(media_root, "thumbnails") == []


def test_a_task_for_an_image_that_changed_since_writes_nothing(media_root, thumbnail_module):
    # given an image replaced before its thumbnail task ran
    product = with_image(picture(800, 600), "first.jpg")
    catalog.set_product_image(product_id=product.pk, image=upload(picture(600, 900), "second.jpg"))

    # when the first image's task runs late, then the second's
    stale = make_thumbnail_task(product_id=product.pk, image_version=1)
    product.refresh_from_db()
    after_stale = (product.thumbnail_status, product.thumbnail.name, product.thumbnail_finished_at)
    current = make_thumbnail_task(product_id=product.pk, image_version=2)

    # then the stale one changed nothing; the thumbnail is the second image's (portrait)
    assert (stale, after_stale) == (None, (Status.PENDING, "", None))
    assert current == "ready"
    product.refresh_from_db()
    assert (product.image.name, product.image_version) == ("products/images/second.jpg", 2)
    assert (product.thumbnail.name, product.thumbnail_width, product.thumbnail_height) == (
        f"products/thumbnails/{product.pk}-2.png",
        200,
        300,
    )
    assert stored(media_root, "thumbnails") == [f"{product.pk}-2.png"]


def test_an_image_replaced_while_the_sandbox_runs_keeps_the_newer_one_and_no_stray_file(
    media_root, thumbnail_module, monkeypatch, django_capture_on_commit_callbacks
):
    product = with_image(picture(800, 600), "first.jpg")
    sandbox_call = catalog.make_thumbnail_png

    def thumbnail_while_the_admin_replaces_the_image(*, image: bytes) -> sandbox.Thumbnail:
        made = sandbox_call(image=image)
        catalog.set_product_image(product_id=product.pk, image=upload(picture(600, 900), "second.jpg"))
        return made

    monkeypatch.setattr(catalog, "make_thumbnail_png", thumbnail_while_the_admin_replaces_the_image)

    with django_capture_on_commit_callbacks(execute=True):
        outcome = catalog.make_product_thumbnail(product_id=product.pk, image_version=1)

    assert outcome is None
    product.refresh_from_db()
    assert (product.image_version, product.thumbnail_status, product.thumbnail.name) == (2, Status.PENDING, "")
    # The first image went with its replacement, and the thumbnail made of it was deleted, not left behind.
    assert stored(media_root, "images") == ["second.jpg"]
    assert stored(media_root, "thumbnails") == []


def test_a_second_delivery_of_a_task_that_succeeded_does_nothing(media_root, thumbnail_module):
    product = with_image()
    make_thumbnail_task(product_id=product.pk, image_version=1)
    product.refresh_from_db()
    first = (product.thumbnail.name, product.thumbnail_finished_at)

    again = make_thumbnail_task(product_id=product.pk, image_version=1)

    product.refresh_from_db()
    assert again is None
    assert (product.thumbnail.name, product.thumbnail_finished_at) == first
    assert stored(media_root, "thumbnails") == [f"{product.pk}-1.png"]


def test_replacing_or_removing_an_image_deletes_the_old_files_after_commit(
    media_root, thumbnail_module, django_capture_on_commit_callbacks
):
    product = with_image(JPEG, "first.jpg")
    make_thumbnail_task(product_id=product.pk, image_version=1)
    assert (stored(media_root, "images"), stored(media_root, "thumbnails")) == (["first.jpg"], [f"{product.pk}-1.png"])

    with django_capture_on_commit_callbacks(execute=True):
        catalog.set_product_image(product_id=product.pk, image=upload(JPEG, "second.jpg"))
        assert stored(media_root, "images") == ["first.jpg", "second.jpg"]  # until the commit
    replaced = (stored(media_root, "images"), stored(media_root, "thumbnails"))
    with django_capture_on_commit_callbacks(execute=True):
        catalog.set_product_image(product_id=product.pk, image=None)

    assert replaced == (["second.jpg"], [])
    assert (stored(media_root, "images"), stored(media_root, "thumbnails")) == ([], [])
    product.refresh_from_db()
    assert (product.image.name, product.image_version, product.thumbnail_status) == ("", 3, Status.NONE)
    # Removing an image schedules no thumbnail: two tasks, for versions 1 and 2.
    assert [arguments["image_version"] for arguments, _ in thumbnail_messages()] == [1, 2]


def test_an_image_file_lost_from_storage_is_recorded_as_missing(media_root):
    product = with_image()
    (media_root / "products/images/mug.jpg").unlink()

    result = make_thumbnail_task(product_id=product.pk, image_version=1)

    product.refresh_from_db()
    assert result == "failed"
    assert (product.thumbnail_status, product.thumbnail_error_code, product.thumbnail_error_reason) == (
        Status.FAILED,
        "image_missing",
        "the image file products/images/mug.jpg is missing from storage",
    )


def test_giving_up_records_the_reason_on_the_product_unless_the_image_changed(media_root):
    product = with_image()

    make_thumbnail_task.give_up("OperationalError: the database went away", product_id=product.pk, image_version=1)
    make_thumbnail_task.give_up("a task for an older image", product_id=product.pk, image_version=0)

    product.refresh_from_db()
    assert (product.thumbnail_status, product.thumbnail_error_code, product.thumbnail_error_reason) == (
        Status.FAILED,
        "gave_up",
        "OperationalError: the database went away",
    )


@pytest.mark.integration
def test_a_missing_module_is_a_deployment_error_dead_lettered_and_recorded(
    transactional_db, media_root, settings, tmp_path, celery_worker
):
    # given a worker whose module was never built
    settings.THUMBNAIL_WASM_PATH = str(tmp_path / "missing.wasm")
    product = ProductFactory()

    # when an image is set (committed, published, consumed from the heavy queue by a real worker)
    catalog.set_product_image(product_id=product.pk, image=upload(JPEG, "mug.jpg"))

    # then the task fails once (not a retry, not a property of the image), is dead-lettered and says why
    wait_for(
        lambda: Product.objects.filter(pk=product.pk, thumbnail_status=Status.FAILED).exists(),
        timeout=30,
        message="the thumbnail task to fail",
    )
    product.refresh_from_db()
    reason = f"SandboxUnavailable: the thumbnail module {tmp_path / 'missing.wasm'} is missing: run bin/build-wasm"
    assert (product.thumbnail_error_code, product.thumbnail_error_reason) == ("gave_up", reason)
    dead_letter = DeadLetter.objects.get()
    assert (dead_letter.task_name, dead_letter.kwargs, dead_letter.reason, dead_letter.attempts) == (
        "orders.make_thumbnail",
        {"product_id": product.pk, "image_version": 1},
        reason,
        1,
    )


def test_seeding_gives_each_demo_product_its_picture_once_and_schedules_its_thumbnail(media_root):
    call_command("seed_catalog")
    catalog.set_product_image(product_id=Product.objects.get(sku="CAP-001").pk, image=upload(JPEG, "own.jpg"))

    call_command("seed_catalog")

    images = dict(Product.objects.values_list("sku", "image"))
    assert images == {
        "BAG-001": "products/images/tote-bag.jpg",
        "BOOK-001": "products/images/notebook.png",
        "CAP-001": "products/images/own.jpg",  # an image set since is kept
        "LAMP-001": "products/images/desk-lamp.png",
        "MUG-001": "products/images/mug.jpg",
        "TEE-001": "products/images/t-shirt.jpg",
    }
    assert set(Product.objects.values_list("thumbnail_status", flat=True)) == {Status.PENDING}
    scheduled = sorted((arguments["product_id"], arguments["image_version"]) for arguments, _ in thumbnail_messages())
    versions = dict(Product.objects.values_list("pk", "image_version"))
    assert scheduled == sorted([*((pk, 1) for pk in versions), (Product.objects.get(sku="CAP-001").pk, 2)])


def test_the_demo_pictures_make_thumbnails_that_fit(thumbnail_module):
    pictures = ROOT / "orders" / "fixtures" / "products"

    sizes = {
        path.name: (catalog.make_thumbnail_png(image=path.read_bytes()).width, path.stat().st_size < 64 * 1024)
        for path in sorted(pictures.glob("*.*g"))
    }

    assert sizes == {
        "cap.jpg": (300, True),
        "desk-lamp.png": (225, True),
        "mug.jpg": (300, True),
        "notebook.png": (300, True),
        "t-shirt.jpg": (300, True),
        "tote-bag.jpg": (300, True),
    }


def test_the_limits_default_to_the_measured_ones_and_the_deadline_stays_below_the_soft_time_limit(settings):
    assert (
        settings.THUMBNAIL_FUEL_LIMIT,
        settings.THUMBNAIL_MEMORY_LIMIT_BYTES,
        settings.THUMBNAIL_DEADLINE_SECONDS,
        settings.THUMBNAIL_MAX_INPUT_BYTES,
        settings.THUMBNAIL_MAX_INPUT_PIXELS,
        Path(settings.THUMBNAIL_WASM_PATH),
    ) == (
        sandbox.FUEL_LIMIT,
        sandbox.MEMORY_LIMIT_BYTES,
        sandbox.DEADLINE_SECONDS,
        sandbox.MAX_INPUT_BYTES,
        sandbox.MAX_INPUT_PIXELS,
        sandbox.MODULE_PATH,
    )
    # Celery's soft time limit cannot interrupt a call inside wasm: the sandbox's deadline must come first.
    assert settings.THUMBNAIL_DEADLINE_SECONDS < settings.CELERY_TASK_SOFT_TIME_LIMIT
    environment = os.environ | {"DJANGO_DEBUG": "true", "THUMBNAIL_DEADLINE_SECONDS": "60"}
    started = subprocess.run(
        [sys.executable, "-c", "import proj.settings"], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    assert started.returncode == 1
    assert started.stderr.strip().splitlines()[-1] == (
        "django.core.exceptions.ImproperlyConfigured: THUMBNAIL_DEADLINE_SECONDS (60) must be below "
        "CELERY_TASK_SOFT_TIME_LIMIT (60): the soft time limit cannot stop a call inside the sandbox."
    )
