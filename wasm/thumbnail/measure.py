"""Measures what the sandbox's limits are set from: build time, module size, compile time, and per image size the
thumbnail time (median of N), fuel used and peak linear memory. Needs Pillow (a test dependency) for the images.

    .venv/bin/python wasm/thumbnail/measure.py [--clean] [--runs 21]
"""

import argparse
import io
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from PIL import Image, ImageDraw  # noqa: E402 - after the path so that core imports from this checkout

from core import sandbox  # noqa: E402

# (width, height, format): the brief's 2000x1500 JPEG, then a 12 and a 24 Mpx photo (the pixel limit's reason).
SIZES = [(2000, 1500, "JPEG"), (2000, 1500, "PNG"), (4000, 3000, "JPEG"), (6000, 4000, "JPEG")]


def photo(width: int, height: int) -> Image.Image:
    """Gradients, sharp shapes and noise: harder to decode than most photos, so the numbers err high."""
    rng = random.Random(1)  # noqa: S311 - test pictures, not secrets
    horizontal = Image.linear_gradient("L").resize((width, height))
    vertical = Image.linear_gradient("L").rotate(90).resize((width, height))
    image = Image.merge("RGB", (horizontal, vertical, Image.effect_noise((width, height), 40)))
    draw = ImageDraw.Draw(image)
    for _ in range(200):
        x, y, size = rng.randrange(width), rng.randrange(height), rng.randrange(10, 200)
        draw.ellipse((x, y, x + size, y + size), fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="delete var/wasm first and time the build from clean")
    parser.add_argument("--runs", type=int, default=21)
    arguments = parser.parse_args()

    if arguments.clean:
        shutil.rmtree(REPO / "var" / "wasm", ignore_errors=True)
    started = time.monotonic()
    subprocess.run([REPO / "bin" / "build-wasm"], check=True)  # noqa: S603 - our own script
    print(f"build: {time.monotonic() - started:.1f} s; module: {sandbox.MODULE_PATH.stat().st_size:,} bytes")

    started = time.monotonic()
    sandbox.prepare_sandbox()
    print(f"engine and module compiled (one thread) in {time.monotonic() - started:.2f} s")

    print("image               input bytes  median s  min s   max s   fuel            linear memory")
    for width, height, image_format in SIZES:
        buffer = io.BytesIO()
        photo(width, height).save(buffer, image_format, **({"quality": 90} if image_format == "JPEG" else {}))
        image = buffer.getvalue()
        results = [sandbox.make_thumbnail(image=image) for _ in range(arguments.runs)]
        seconds = [result.seconds for result in results]
        print(
            f"{width}x{height} {image_format:<5} {len(image):>12,}  {statistics.median(seconds):7.3f}  "
            f"{min(seconds):6.3f}  {max(seconds):6.3f}  {results[0].fuel_used:>14,}  "
            f"{results[0].memory_bytes / 2**20:6.1f} MiB"
        )
    # Linux reports ru_maxrss in KiB: the process's peak, which includes Pillow making the test images.
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
