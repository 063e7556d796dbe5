from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.sandbox import MIB, SandboxError, SandboxUnavailable
from orders.catalog import make_thumbnail_png

# What each of the sandbox's codes means, as the start of the one line the command fails with.
REFUSALS = {
    "not_an_image": "{input} is not an image the sandbox reads",
    "image_too_large": "{input} is too large (THUMBNAIL_MAX_INPUT_BYTES, THUMBNAIL_MAX_INPUT_PIXELS)",
    "fuel_exhausted": "{input} hit the sandbox's fuel limit (THUMBNAIL_FUEL_LIMIT)",
    "memory_exhausted": "{input} hit the sandbox's memory limit (THUMBNAIL_MEMORY_LIMIT_BYTES)",
    "deadline_exceeded": "{input} hit the sandbox's deadline (THUMBNAIL_DEADLINE_SECONDS)",
    "module_trapped": "the thumbnail module failed on {input}",
}


class Command(BaseCommand):
    help = (
        "Make a thumbnail of INPUT (PNG or JPEG) in the WebAssembly sandbox, with the limits of the settings, as the "
        "heavy pool does: OUTPUT is a PNG that fits 300x300. Fails with one line saying why (exit 1)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("input", type=Path, help="the image, PNG or JPEG")
        parser.add_argument("output", type=Path, help="where to write the PNG thumbnail")

    def handle(self, *args, **options) -> None:
        source, target = options["input"], options["output"]
        try:
            image = source.read_bytes()
        except OSError as error:
            raise CommandError(f"cannot read {source}: {error.strerror}") from None
        try:
            thumbnail = make_thumbnail_png(image=image)
        except SandboxUnavailable:
            raise CommandError(
                f"the thumbnail module {settings.THUMBNAIL_WASM_PATH} is missing: build it with bin/build-wasm "
                "(offline, from Debian's cargo, rustc, libstd-rust-dev-wasm32, lld-14 and librust-image-dev)"
            ) from None
        except SandboxError as error:
            refusal = REFUSALS.get(error.code, "no thumbnail of {input}").format(input=source)
            raise CommandError(f"{refusal}: {error.reason}") from None
        try:
            target.write_bytes(thumbnail.png)
        except OSError as error:
            raise CommandError(f"cannot write {target}: {error.strerror}") from None
        memory = thumbnail.memory_bytes / MIB
        self.stdout.write(
            f"{target}: {thumbnail.width}x{thumbnail.height} PNG, {len(thumbnail.png):,} bytes, "
            f"in {thumbnail.seconds:.2f} s ({thumbnail.fuel_used:,} fuel, {memory:.1f} MiB of memory)"
        )
