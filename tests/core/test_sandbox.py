"""The thumbnail sandbox: the real module (built by bin/build-wasm) against Pillow, and hand-written hostile
modules (WAT) against each limit. Pillow is a test-only dependency: the reference Lanczos and the test images."""

import io
import math
import multiprocessing
import os
import random
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import wasmtime
from PIL import Image, ImageChops, ImageDraw, ImageStat

from core import sandbox as sandbox_module
from core.sandbox import (
    DeadlineExceeded,
    FuelExhausted,
    ImageHeader,
    ImageTooLarge,
    MemoryExhausted,
    ModuleTrapped,
    NotAnImage,
    Thumbnail,
    make_thumbnail,
    read_image_header,
)

REPO = Path(__file__).resolve().parents[2]

# Measured: 58.5-59.4 dB against Pillow's Lanczos for these images, 37-39 dB against Pillow's bilinear.
# 50 dB tells the two filters apart with room for decoder differences (jpeg-decoder versus libjpeg).
LANCZOS_PSNR_THRESHOLD_DB = 50

# The ABI of wasm/thumbnail/src/lib.rs, in hand-written modules: `alloc` hands out a fixed buffer at 1024.
RUNAWAY_MODULE = """
(module
  (memory (export "memory") 2)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "thumbnail") (param i32 i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))
"""
TRAPPING_MODULE = """
(module
  (memory (export "memory") 2)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "thumbnail") (param i32 i32) (result i64) unreachable))
"""
# Returns (0xffff0000 << 32) | 16: a PNG "at" an address far outside its two pages of memory.
OUT_OF_BOUNDS_MODULE = """
(module
  (memory (export "memory") 2)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "thumbnail") (param i32 i32) (result i64) (i64.const 0xffff000000000010)))
"""
WASI_MODULE = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "thumbnail") (param i32 i32) (result i64) (i64.const 0)))
"""


@pytest.fixture(scope="module", autouse=True)
def built_module() -> None:
    """The real module, built (or found up to date) by bin/build-wasm; its message if Debian packages are missing."""
    result = subprocess.run([REPO / "bin" / "build-wasm"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"bin/build-wasm failed:\n{result.stderr}")


@pytest.fixture
def wat_module(tmp_path):
    def write(source: str) -> Path:
        path = tmp_path / f"module-{len(list(tmp_path.iterdir()))}.wasm"
        path.write_bytes(wasmtime.wat2wasm(source))
        return path

    return write


def photo(width: int, height: int, *, seed: int = 1) -> Image.Image:
    """A deterministic picture with gradients, sharp-edged shapes and noise (the details a resize filter shows)."""
    rng = random.Random(seed)  # noqa: S311 - test pictures, not secrets
    horizontal = Image.linear_gradient("L").resize((width, height))
    vertical = Image.linear_gradient("L").rotate(90).resize((width, height))
    image = Image.merge("RGB", (horizontal, vertical, Image.effect_noise((width, height), 40)))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x, y, size = rng.randrange(width), rng.randrange(height), rng.randrange(10, width // 4)
        draw.ellipse((x, y, x + size, y + size), fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    return image


def encode(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    return buffer.getvalue()


def psnr(first: Image.Image, second: Image.Image) -> float:
    """Peak signal-to-noise ratio in dB of two RGB images of the same size."""
    mean_square_error = sum(rms**2 for rms in ImageStat.Stat(ImageChops.difference(first, second)).rms) / 3
    return 10 * math.log10(255**2 / mean_square_error)


GOOD_JPEG = encode(photo(800, 600, seed=7), "JPEG")
SMALL_PNG = encode(photo(64, 48), "PNG")


def assert_still_works() -> None:
    """The process that just saw a failure makes a good thumbnail next."""
    thumbnail = make_thumbnail(image=GOOD_JPEG)
    assert (thumbnail.width, thumbnail.height) == (300, 225)


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG start (signature, IHDR with its CRC) declaring any size, and an empty IDAT."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("image_format", "size", "expected"),
    [
        ("PNG", (1200, 900), (300, 225)),
        ("PNG", (900, 1200), (225, 300)),
        ("PNG", (640, 427), (300, 200)),
        ("JPEG", (1600, 1200), (300, 225)),
        ("JPEG", (1200, 1600), (225, 300)),
    ],
)
def test_thumbnail_fits_300_and_matches_pillows_lanczos(image_format, size, expected):
    # given
    original = encode(photo(*size), image_format)

    # when
    thumbnail = make_thumbnail(image=original)

    # then
    made = Image.open(io.BytesIO(thumbnail.png))
    assert (made.format, made.mode, made.size) == ("PNG", "RGB", expected)
    assert (thumbnail.width, thumbnail.height) == expected
    source = Image.open(io.BytesIO(original)).convert("RGB")
    assert psnr(made, source.resize(expected, Image.Resampling.LANCZOS)) > LANCZOS_PSNR_THRESHOLD_DB
    # The threshold tells filters apart: the same thumbnail is far from a bilinear resize.
    assert psnr(made, source.resize(expected, Image.Resampling.BILINEAR)) < LANCZOS_PSNR_THRESHOLD_DB - 5
    # The cost model behind the limits' defaults: ~1,000 fuel per pixel, and at least the decoded RGB in memory.
    pixels = size[0] * size[1]
    assert 500 * pixels < thumbnail.fuel_used < 2000 * pixels
    assert 3 * pixels < thumbnail.memory_bytes < 64 * 1024 * 1024


def test_runaway_module_is_stopped_by_fuel(wat_module):
    with pytest.raises(FuelExhausted) as stopped:
        make_thumbnail(image=SMALL_PNG, fuel=5_000_000, module_path=wat_module(RUNAWAY_MODULE))

    assert stopped.value.reason == "the module used all of its 5,000,000 units of fuel"
    assert stopped.value.code == "fuel_exhausted"
    assert_still_works()


def test_deadline_stops_an_infinite_loop_with_unlimited_fuel(wat_module):
    module_path = wat_module(RUNAWAY_MODULE)
    started = time.monotonic()

    with pytest.raises(DeadlineExceeded) as stopped:
        make_thumbnail(image=SMALL_PNG, fuel=None, deadline_seconds=0.3, module_path=module_path)

    elapsed = time.monotonic() - started
    assert stopped.value.reason == "the module ran past its deadline of 0.3 s"
    assert 0.3 <= elapsed < 2.0
    assert_still_works()


def test_deadlines_of_concurrent_calls_are_their_own(wat_module):
    # given two runaway calls at once in two threads, sharing the engine's epoch
    module_path = wat_module(RUNAWAY_MODULE)
    outcomes: dict[float, tuple[str, float]] = {}

    def run(deadline_seconds: float) -> None:
        started = time.monotonic()
        try:
            make_thumbnail(image=SMALL_PNG, fuel=None, deadline_seconds=deadline_seconds, module_path=module_path)
        except DeadlineExceeded as error:
            outcomes[deadline_seconds] = (error.code, time.monotonic() - started)

    threads = [threading.Thread(target=run, args=(deadline,)) for deadline in (0.3, 1.5)]

    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    # then the short deadline did not cut the long one short, and no ticker thread outlives the calls
    assert sorted(outcomes) == [0.3, 1.5]
    assert outcomes[0.3][0] == outcomes[1.5][0] == "deadline_exceeded"
    assert 0.3 <= outcomes[0.3][1] < 1.0
    assert 1.5 <= outcomes[1.5][1] < 3.0
    assert [thread.name for thread in threading.enumerate() if thread.name == "wasm-epoch-ticker"] == []


def test_memory_bomb_is_stopped_by_the_memory_limit():
    # given a 4000x3000 PNG of one colour: 42 KB on disk, 36 MB decoded, and under the pixel limit
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000), (200, 30, 30)).save(buffer, "PNG")

    # when / then
    with pytest.raises(MemoryExhausted) as stopped:
        make_thumbnail(image=buffer.getvalue(), memory_bytes=32 * 1024 * 1024)

    assert stopped.value.reason == (
        "the module needed more than its 33,554,432 bytes of memory (an allocation of 36,000,000 bytes was refused)"
    )
    assert_still_works()


def test_hostile_png_header_is_refused_before_decoding(tmp_path):
    # given a PNG declaring 100000x100000 pixels, and no module at all: a refusal cannot have decoded anything
    hostile = png_header_only(100_000, 100_000)

    with pytest.raises(ImageTooLarge) as refused:
        make_thumbnail(image=hostile, module_path=tmp_path / "no-module.wasm")

    assert refused.value.reason == (
        "the PNG header declares 100000x100000 = 10,000,000,000 pixels, more than the 25,000,000 accepted"
    )
    assert_still_works()


def test_hostile_jpeg_frame_header_is_refused_before_decoding(tmp_path):
    # given a JPEG whose SOF0 (after an APP0 segment) declares 65000x65000 pixels
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 65000, 65000, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    hostile = b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"

    with pytest.raises(ImageTooLarge) as refused:
        make_thumbnail(image=hostile, module_path=tmp_path / "no-module.wasm")

    assert refused.value.reason == (
        "the JPEG header declares 65000x65000 = 4,225,000,000 pixels, more than the 25,000,000 accepted"
    )


def test_too_many_bytes_are_refused_before_decoding(tmp_path):
    with pytest.raises(ImageTooLarge) as refused:
        make_thumbnail(image=GOOD_JPEG, max_input_bytes=1000, module_path=tmp_path / "no-module.wasm")

    assert refused.value.reason == f"{len(GOOD_JPEG):,} bytes, more than the 1,000 accepted"


def test_headers_declare_the_dimensions_pillow_writes():
    progressive = io.BytesIO()
    photo(123, 45).save(progressive, "JPEG", progressive=True)

    assert read_image_header(encode(photo(640, 427), "PNG")) == ImageHeader(format="png", width=640, height=427)
    assert read_image_header(GOOD_JPEG) == ImageHeader(format="jpeg", width=800, height=600)
    assert read_image_header(progressive.getvalue()) == ImageHeader(format="jpeg", width=123, height=45)


TRUNCATED_PNG = encode(photo(800, 600), "PNG")[:20_000]
TRUNCATED_JPEG = GOOD_JPEG[: len(GOOD_JPEG) // 2]
CORRUPT_JPEG = GOOD_JPEG[:2000] + bytes(byte ^ 0xFF for byte in GOOD_JPEG[2000:4000]) + GOOD_JPEG[4000:]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (TRUNCATED_PNG, "the image data is corrupt or truncated"),
        (TRUNCATED_JPEG, "the image data is corrupt or truncated"),
        (CORRUPT_JPEG, "the image data is corrupt or truncated"),
        (b"GIF89a" + bytes(100), "neither a PNG nor a JPEG (unknown signature)"),
        (b"", "neither a PNG nor a JPEG (unknown signature)"),
        (b"\x89PNG\r\n\x1a\n", "a PNG signature without an IHDR chunk"),
        (GOOD_JPEG[:100], "a JPEG whose headers end before its frame header"),
    ],
    ids=["truncated-png", "truncated-jpeg", "corrupt-jpeg", "gif", "empty", "png-signature-only", "jpeg-headers-cut"],
)
def test_truncated_or_corrupt_image_is_not_an_image(data, reason):
    with pytest.raises(NotAnImage) as refused:
        make_thumbnail(image=data)

    assert refused.value.reason == reason
    assert refused.value.code == "not_an_image"
    assert_still_works()


def test_trap_is_reported_with_its_cause(wat_module):
    with pytest.raises(ModuleTrapped) as trapped:
        make_thumbnail(image=SMALL_PNG, module_path=wat_module(TRAPPING_MODULE))

    assert trapped.value.reason == "the module trapped: wasm trap: wasm `unreachable` instruction executed"
    assert_still_works()


def test_module_pointing_outside_its_memory_is_a_trap(wat_module):
    with pytest.raises(ModuleTrapped) as trapped:
        make_thumbnail(image=SMALL_PNG, module_path=wat_module(OUT_OF_BOUNDS_MODULE))

    assert trapped.value.reason == "the module pointed outside its memory (0xffff0000+16)"


def test_module_asking_for_other_imports_is_refused(wat_module):
    with pytest.raises(ModuleTrapped) as refused:
        make_thumbnail(image=SMALL_PNG, module_path=wat_module(WASI_MODULE))

    assert refused.value.reason == (
        "the module imports wasi_snapshot_preview1.fd_write, which the sandbox does not offer"
    )


def _thumbnail_in_child(image: bytes, results) -> None:
    """In the forked child: a thumbnail, and whether the runtime that made it is this process's own."""
    thumbnail = make_thumbnail(image=image)
    runtime = sandbox_module._runtime
    results.put(((thumbnail.width, thumbnail.height), runtime is not None and runtime.pid == os.getpid()))


def test_forked_child_compiles_its_own_sandbox_after_the_parent_used_it():
    # given a parent that compiled the engine and module and made a thumbnail
    assert isinstance(make_thumbnail(image=GOOD_JPEG), Thumbnail)
    assert [thread.name for thread in threading.enumerate() if thread.name == "wasm-epoch-ticker"] == []
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    # when a forked child (as in Celery's prefork pool) makes one too
    child = context.Process(target=_thumbnail_in_child, args=(GOOD_JPEG, results))
    child.start()
    child.join(timeout=60)

    # then it finished (no deadlock) with a runtime of its own
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child did not finish its thumbnail in 60 s")
    assert child.exitcode == 0
    assert results.get(timeout=5) == ((300, 225), True)
    assert_still_works()


def test_sandbox_compiles_on_first_use_and_leaves_no_thread_behind():
    # Threads alive at a fork are what deadlock the child: count the OS threads, which include wasmtime's own.
    code = """if True:
        import os
        from core import sandbox
        from tests.core.test_sandbox import GOOD_JPEG
        threads = lambda: len(os.listdir("/proc/self/task"))
        print(sandbox._runtime is None, threads())
        sandbox.prepare_sandbox()
        print(len(sandbox._runtime._modules), threads())
        print(sandbox.make_thumbnail(image=GOOD_JPEG).width, threads())
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)

    assert result.stdout.split("\n") == ["True 1", "1 1", "300 1", ""], result.stderr
