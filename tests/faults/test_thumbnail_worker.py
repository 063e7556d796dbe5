"""A real heavy pool: a prefork worker subprocess on the `heavy` queue thumbnails products one after the other, and
the hostile images among them (a decompression bomb, a memory bomb) are refused or stopped without taking down the
pool process, which goes on to the next product."""

import pytest

from jobs.models import DeadLetter
from orders import catalog
from orders.models import Product
from tests.factories import ProductFactory
from tests.helpers import wait_for
from tests.images import dimensions, memory_bomb_png, picture, png_header_only, upload

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# With the default limits no image under the pixel limit exhausts the memory (the worst, a 16-bit RGBA PNG at the
# limit, peaks at 216 MiB of 256): the pool runs with 64 MiB here, so a 3000x3000 one (72 MB decoded) is a bomb.
POOL_MEMORY_LIMIT_BYTES = 64 * 1024 * 1024


def test_a_heavy_prefork_worker_thumbnails_products_in_a_row_and_outlives_the_hostile_ones(
    faults, media_root, settings, thumbnail_module
):
    # given the heavy pool as the Procfile runs it: one prefork child, which compiles the sandbox after the fork
    worker = faults.start_worker(
        queues="heavy",
        concurrency=1,
        MEDIA_ROOT=str(media_root),
        THUMBNAIL_MEMORY_LIMIT_BYTES=str(POOL_MEMORY_LIMIT_BYTES),
    )
    (child,) = worker.pool_children()
    wait_for(
        lambda: f"Thumbnail sandbox ready in pool process {child.pid} (" in worker.log(),
        timeout=30,
        message="the pool process to compile the sandbox",
    )
    # and five products whose images are set through the service, one after the other. The uploader here accepts
    # a header of any size: the pool's own limit must refuse the decompression bomb, before decoding it.
    settings.THUMBNAIL_MAX_INPUT_PIXELS = 10**12
    images = [
        ("photo.jpg", picture(1600, 1200)),
        ("bomb.png", png_header_only(100_000, 100_000)),
        ("landscape.png", picture(640, 427, "PNG")),
        ("memory-bomb.png", memory_bomb_png(3000, 3000)),
        ("portrait.jpg", picture(1200, 1600)),
    ]
    products = [ProductFactory(sku=f"HEAVY-{index}") for index in range(len(images))]
    for product, (name, data) in zip(products, images, strict=True):
        catalog.set_product_image(product_id=product.pk, image=upload(data, name))

    # when the worker has taken them all
    wait_for(
        lambda: not Product.objects.filter(pk__in=[product.pk for product in products], thumbnail_status="pending"),
        timeout=120,
        interval=0.5,
        message="every thumbnail task to finish",
    )

    # then the good ones have their thumbnails, the hostile ones their reasons
    done = sorted(Product.objects.filter(pk__in=[product.pk for product in products]), key=lambda row: row.sku)
    assert [
        (row.thumbnail_status, row.thumbnail_width, row.thumbnail_height, row.thumbnail_error_code) for row in done
    ] == [
        ("ready", 300, 225, ""),
        ("failed", None, None, "image_too_large"),
        ("ready", 300, 200, ""),
        ("failed", None, None, "memory_exhausted"),
        ("ready", 225, 300, ""),
    ]
    assert [row.thumbnail_error_reason for row in done if row.thumbnail_error_code] == [
        "the PNG header declares 100000x100000 = 10,000,000,000 pixels, more than the 25,000,000 accepted",
        "the module needed more than its 67,108,864 bytes of memory (an allocation of 72,000,000 bytes was refused)",
    ]
    for row in done:
        if row.thumbnail_status == "ready":
            png = (media_root / row.thumbnail.name).read_bytes()
            assert dimensions(png) == ("PNG", row.thumbnail_width, row.thumbnail_height)
    # in a row, in the order they were scheduled, each done after the one before it failed or succeeded
    finished = [row.thumbnail_finished_at for row in done]
    assert finished == sorted(finished)
    # by the one pool process, which is still there and compiled the sandbox once; the worker itself is alive
    assert [process.pid for process in worker.pool_children()] == [child.pid]
    assert child.pid != worker.pid
    assert worker.process.poll() is None
    assert worker.log().count("Thumbnail sandbox ready in pool process") == 1
    assert "WorkerLostError" not in worker.log()
    assert DeadLetter.objects.count() == 0
