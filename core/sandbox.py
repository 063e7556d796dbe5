"""Thumbnails made by the article's Rust function (wasm/thumbnail) inside a wasmtime sandbox with hard limits.

Every call gets its own store: fuel bounds the instructions, a store limit the memory, epoch interruption the wall
clock, and the input is checked (bytes, and pixels as its header declares them) before the module sees it. The
engine and the module are compiled lazily, in the process that calls, so that a Celery prefork child compiles its
own after the fork. The module's ABI is documented in wasm/thumbnail/src/lib.rs.
"""

import math
import os
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from core.errors import ApplicationError

MODULE_PATH = Path(__file__).resolve().parent.parent / "var" / "wasm" / "thumbnail.wasm"
"""Where bin/build-wasm puts the module (a build output, git-ignored)."""

THUMBNAIL_SIZE = 300
"""The box the module's thumbnails fit in (wasm/thumbnail/src/lib.rs), checked on what it returns."""

MIB = 1024 * 1024

# The defaults come from measurements on the 2-core development machine (wasm/thumbnail/README.md, reproduced by
# wasm/thumbnail/measure.py): the module's cost is linear in pixels, ~1,000 units of fuel and 5-8 bytes of linear
# memory per pixel, at ~20 billion units of fuel a second. A 2000x1500 JPEG: 0.16 s, 3.1e9 fuel, 23 MiB; a
# 6000x4000 JPEG: 1.2 s, 23e9 fuel, 180 MiB.
MAX_INPUT_PIXELS = 25_000_000
"""A 24-megapixel camera (6000x4000) with room to spare; a JPEG at the limit needs ~190 MiB, under the memory limit.
Checked against the header, so a decompression bomb is refused before a byte of it is decoded."""
MAX_INPUT_BYTES = 32 * MIB
"""A 24-megapixel JPEG at quality 95 is ~12 MB; the input is copied into the module's memory, so it counts there too.
A larger PNG photo is refused (product photos should be JPEG)."""
MEMORY_LIMIT_BYTES = 256 * MIB
"""A JPEG at the pixel limit peaks at ~190 MiB of linear memory; a heavy-pool process runs one call at a time,
so this bounds what one image can take from the node. The worst case at the pixel limit, a 16-bit RGBA PNG of
5000x5000, peaks at 216 MiB (measured): under the limit too, so with these defaults the pixel limit refuses first."""
FUEL_LIMIT = 50_000_000_000
"""Twice the measured cost of an image at the pixel limit (25e9); a runaway module stops after ~2.5 s of CPU. Fuel
counts instructions, so unlike the deadline it does not depend on how busy the node is."""
DEADLINE_SECONDS = 10.0
"""Six times the measured 1.6 s of the slowest image at the pixel limit, for a busy or CPU-throttled node; well
under Celery's soft time limit (60 s), which cannot interrupt a call inside wasm, so the sandbox stops it first."""

EPOCH_TICK_SECONDS = 0.01
"""The deadline's resolution: 10 ms is noise beside a deadline of seconds, and a wake-up every 10 ms while a call
runs costs nothing measurable."""

UNLIMITED_FUEL = 2**62
"""`fuel=None` still needs fuel in the store (the engine counts it for every store): this is centuries of work."""

WASM_PAGE_BYTES = 65536

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_START_OF_IMAGE = b"\xff\xd8"
# Start-of-frame markers, which carry the frame's dimensions: SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC).
JPEG_START_OF_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field after them: TEM and the restart markers RST0-RST7.
JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
JPEG_START_OF_SCAN, JPEG_END_OF_IMAGE = 0xDA, 0xD9

# The module's error codes (ERROR_* in wasm/thumbnail/src/lib.rs).
MODULE_ERROR_UNSUPPORTED_FORMAT = 1
MODULE_ERROR_DECODE = 2
MODULE_ERROR_LIMITS = 3
MODULE_ERROR_ENCODE = 4


class SandboxError(ApplicationError):
    """A thumbnail refused or stopped; `reason` is one line saying why, `code` a stable name for it.

    A property of the image (or of a hostile module), so final: 422, never retried.
    """

    code = "sandbox_error"
    status = 422

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotAnImage(SandboxError):
    code = "not_an_image"


class ImageTooLarge(SandboxError):
    code = "image_too_large"


class FuelExhausted(SandboxError):
    code = "fuel_exhausted"


class MemoryExhausted(SandboxError):
    code = "memory_exhausted"


class DeadlineExceeded(SandboxError):
    code = "deadline_exceeded"


class ModuleTrapped(SandboxError):
    """The module trapped (a bug or a hostile module) or broke its ABI."""

    code = "module_trapped"


class SandboxUnavailable(RuntimeError):
    """The module is not there (not built): a deployment problem, not a property of the image."""


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "png" or "jpeg"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class Thumbnail:
    png: bytes
    width: int
    height: int
    fuel_used: int
    # The module's linear memory when the call ended, which is its peak: wasm memory never shrinks.
    memory_bytes: int
    seconds: float


def read_image_header(data: bytes) -> ImageHeader:
    """The format and dimensions an image's header declares (PNG IHDR, JPEG SOFn), without decoding it."""
    if data.startswith(PNG_SIGNATURE):
        return _read_png_header(data)
    if data.startswith(JPEG_START_OF_IMAGE):
        return _read_jpeg_header(data)
    raise NotAnImage("neither a PNG nor a JPEG (unknown signature)")


def _read_png_header(data: bytes) -> ImageHeader:
    # The IHDR chunk must come first: length 13, type, then width and height as big-endian u32.
    if len(data) < 24 or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise NotAnImage("a PNG signature without an IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        raise NotAnImage(f"a PNG declaring {width}x{height} pixels")
    return ImageHeader(format="png", width=width, height=height)


def _read_jpeg_header(data: bytes) -> ImageHeader:
    position = 2
    while True:
        if position >= len(data) or data[position] != 0xFF:
            raise NotAnImage("a JPEG whose headers end before its frame header")
        while position < len(data) and data[position] == 0xFF:  # fill bytes may precede a marker
            position += 1
        if position >= len(data):
            raise NotAnImage("a JPEG whose headers end before its frame header")
        marker = data[position]
        position += 1
        if marker in JPEG_STANDALONE_MARKERS:
            continue
        if marker in (JPEG_START_OF_SCAN, JPEG_END_OF_IMAGE):
            raise NotAnImage("a JPEG with no frame header before its image data")
        if position + 2 > len(data):
            raise NotAnImage("a JPEG truncated inside its headers")
        (length,) = struct.unpack(">H", data[position : position + 2])
        if marker in JPEG_START_OF_FRAME_MARKERS:
            # Segment: length (2), sample precision (1), height (2), width (2), components (1).
            if length < 8 or position + 7 > len(data):
                raise NotAnImage("a JPEG truncated inside its frame header")
            height, width = struct.unpack(">HH", data[position + 3 : position + 7])
            if width == 0 or height == 0:
                # Height 0 defers it to a DNL marker after the first scan: the pixels cannot be bounded up front.
                raise NotAnImage(f"a JPEG declaring {width}x{height} pixels")
            return ImageHeader(format="jpeg", width=width, height=height)
        if length < 2:
            raise NotAnImage("a JPEG with a malformed segment length")
        position += length


def check_image(
    *, image: bytes, max_input_bytes: int = MAX_INPUT_BYTES, max_input_pixels: int = MAX_INPUT_PIXELS
) -> ImageHeader:
    """Refuse an input before decoding: too many bytes, not a PNG or JPEG, or too many declared pixels."""
    if len(image) > max_input_bytes:
        raise ImageTooLarge(f"{len(image):,} bytes, more than the {max_input_bytes:,} accepted")
    header = read_image_header(image)
    if header.pixels > max_input_pixels:
        raise ImageTooLarge(
            f"the {header.format.upper()} header declares {header.width}x{header.height} = {header.pixels:,} "
            f"pixels, more than the {max_input_pixels:,} accepted"
        )
    return header


def prepare_sandbox(*, module_path: Path = MODULE_PATH) -> None:
    """Compile the engine and module in this process now rather than on its first thumbnail: call it after the
    fork (Celery's worker_process_init), never before."""
    _get_runtime().module(module_path)


def make_thumbnail(
    *,
    image: bytes,
    fuel: int | None = FUEL_LIMIT,
    memory_bytes: int = MEMORY_LIMIT_BYTES,
    deadline_seconds: float = DEADLINE_SECONDS,
    max_input_bytes: int = MAX_INPUT_BYTES,
    max_input_pixels: int = MAX_INPUT_PIXELS,
    module_path: Path = MODULE_PATH,
) -> Thumbnail:
    """A PNG of `image` (PNG or JPEG) that fits 300x300, made in the sandbox; a SandboxError says why not."""
    check_image(image=image, max_input_bytes=max_input_bytes, max_input_pixels=max_input_pixels)
    runtime = _get_runtime()
    module = runtime.module(module_path)
    started = time.monotonic()
    with runtime.ticker.running():
        png, fuel_used, memory_used = _call_module(
            runtime=runtime,
            module=module,
            image=image,
            fuel=fuel,
            memory_bytes=memory_bytes,
            deadline_seconds=deadline_seconds,
        )
    seconds = time.monotonic() - started
    try:
        header = read_image_header(png)
    except NotAnImage as error:
        raise ModuleTrapped(f"the module returned something that is not a PNG ({error.reason})") from None
    if header.format != "png" or header.width > THUMBNAIL_SIZE or header.height > THUMBNAIL_SIZE:
        raise ModuleTrapped(f"the module returned a {header.width}x{header.height} {header.format.upper()}")
    return Thumbnail(
        png=png,
        width=header.width,
        height=header.height,
        fuel_used=fuel_used,
        memory_bytes=memory_used,
        seconds=seconds,
    )


def _call_module(
    *,
    runtime: "_Runtime",
    module: wasmtime.Module,
    image: bytes,
    fuel: int | None,
    memory_bytes: int,
    deadline_seconds: float,
) -> tuple[bytes, int, int]:
    """Run the module once in a fresh store; return (png, fuel used, linear memory at the end)."""
    minimum_bytes = _minimum_memory_bytes(module)
    if minimum_bytes > memory_bytes:
        raise MemoryExhausted(f"the module starts with {minimum_bytes:,} bytes of memory, over its {memory_bytes:,}")
    initial_fuel = UNLIMITED_FUEL if fuel is None else fuel
    refused_allocations: list[int] = []

    def stopped(error: Exception | None) -> SandboxError:
        """What stopped the module: a trap's code says fuel or deadline; a refused allocation says memory."""
        trap_code = error.trap_code if isinstance(error, wasmtime.Trap) else None
        if trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
            return FuelExhausted(f"the module used all of its {initial_fuel:,} units of fuel")
        if trap_code == wasmtime.TrapCode.INTERRUPT:
            return DeadlineExceeded(f"the module ran past its deadline of {deadline_seconds:g} s")
        if refused_allocations:
            return MemoryExhausted(
                f"the module needed more than its {memory_bytes:,} bytes of memory "
                f"(an allocation of {refused_allocations[0]:,} bytes was refused)"
            )
        if error is None:
            return ModuleTrapped("the module's alloc returned 0")
        # wasmtime's message is a backtrace, then "Caused by:" and the cause on the last line.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return ModuleTrapped(f"the module trapped: {lines[-1] if lines else type(error).__name__}")

    # One store per call: nothing a call did (memory contents, a trap mid-allocation) reaches the next one. Closed
    # on leaving, so its memory (up to memory_bytes) goes now, not when a traceback that mentions it is collected.
    with wasmtime.Store(runtime.engine) as store:
        store.set_fuel(initial_fuel)
        store.set_limits(memory_size=memory_bytes, instances=1, tables=1, memories=1)
        # The ticker increments the epoch every EPOCH_TICK_SECONDS; one tick more so the deadline is never short.
        store.set_epoch_deadline(math.ceil(deadline_seconds / EPOCH_TICK_SECONDS) + 1)
        try:
            instance = wasmtime.Instance(store, module, _imports(store, module, refused_allocations))
            memory = _export(store, instance, "memory", wasmtime.Memory)
            alloc = _export(store, instance, "alloc", wasmtime.Func)
            thumbnail = _export(store, instance, "thumbnail", wasmtime.Func)
            input_pointer = alloc(store, len(image)) & 0xFFFF_FFFF
            if input_pointer == 0:
                raise stopped(None)
            _check_bounds(store, memory, input_pointer, len(image))
            memory.write(store, image, input_pointer)
            packed = thumbnail(store, input_pointer, len(image)) & 0xFFFF_FFFF_FFFF_FFFF
        except (wasmtime.Trap, wasmtime.WasmtimeError) as error:
            raise stopped(error) from None
        output_pointer, output_length = packed >> 32, packed & 0xFFFF_FFFF
        if output_pointer == 0:
            raise _module_error(output_length)
        _check_bounds(store, memory, output_pointer, output_length)
        png = bytes(memory.read(store, output_pointer, output_pointer + output_length))
        return png, initial_fuel - store.get_fuel(), memory.data_len(store)


def _imports(store: wasmtime.Store, module: wasmtime.Module, refused_allocations: list[int]) -> list:
    """The one import the sandbox offers: `sandbox.out_of_memory(size)`, recording a refused allocation."""

    def out_of_memory(size: int) -> None:
        # Recorded, never raised: the module aborts right after, and the trap is translated from this record.
        refused_allocations.append(size & 0xFFFF_FFFF)

    imports: list = []
    for wanted in module.imports:
        if (wanted.module, wanted.name) != ("sandbox", "out_of_memory"):
            raise ModuleTrapped(f"the module imports {wanted.module}.{wanted.name}, which the sandbox does not offer")
        function_type = wasmtime.FuncType([wasmtime.ValType.i32()], [])
        imports.append(wasmtime.Func(store, function_type, out_of_memory))
    return imports


def _export[Kind](store: wasmtime.Store, instance: wasmtime.Instance, name: str, kind: type[Kind]) -> Kind:
    try:
        export = instance.exports(store)[name]
    except KeyError:
        raise ModuleTrapped(f"the module does not export {name}") from None
    if not isinstance(export, kind):
        raise ModuleTrapped(f"the module's export {name} is not a {kind.__name__}")
    return export


def _minimum_memory_bytes(module: wasmtime.Module) -> int:
    for export in module.exports:
        if export.name == "memory" and isinstance(export.type, wasmtime.MemoryType):
            return export.type.limits.min * WASM_PAGE_BYTES
    raise ModuleTrapped("the module exports no memory")


def _check_bounds(store: wasmtime.Store, memory: wasmtime.Memory, pointer: int, length: int) -> None:
    if pointer + length > memory.data_len(store):
        raise ModuleTrapped(f"the module pointed outside its memory ({pointer:#x}+{length})")


def _module_error(code: int) -> SandboxError:
    if code == MODULE_ERROR_UNSUPPORTED_FORMAT:
        return NotAnImage("the image uses a format or feature the decoder does not support")
    if code == MODULE_ERROR_DECODE:
        return NotAnImage("the image data is corrupt or truncated")
    if code == MODULE_ERROR_LIMITS:
        return ImageTooLarge("the decoder's own limits refused the image")
    if code == MODULE_ERROR_ENCODE:
        return ModuleTrapped("the module could not encode the PNG")
    return ModuleTrapped(f"the module returned the unknown error code {code}")


class _EpochTicker:
    """Increments the engine's epoch every tick while at least one call runs; between calls no thread exists,
    so a fork (Celery's prefork pool) never copies a process with a ticker in it."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._condition = threading.Condition()
        self._calls = 0
        self._thread: threading.Thread | None = None

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._condition:
            self._calls += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._tick, name="wasm-epoch-ticker", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            retired = None
            with self._condition:
                self._calls -= 1
                if self._calls == 0:
                    retired, self._thread = self._thread, None
                    self._condition.notify_all()
            if retired is not None:
                retired.join()

    def _tick(self) -> None:
        current = threading.current_thread()
        with self._condition:
            while self._thread is current:
                self._condition.wait(timeout=EPOCH_TICK_SECONDS)
                if self._thread is current:
                    self._engine.increment_epoch()


class _Runtime:
    """This process's engine, epoch ticker and compiled modules."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        # Parallel compilation starts a thread pool; a child forked after it compiles with a pool whose threads
        # were not copied, and waits for them forever (seen here). One thread compiles the module in 0.3-0.45 s,
        # once per process.
        config.parallel_compilation = False
        self.engine = wasmtime.Engine(config)
        self.ticker = _EpochTicker(self.engine)
        self._modules: dict[tuple[str, int, int], wasmtime.Module] = {}

    def module(self, path: Path) -> wasmtime.Module:
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise SandboxUnavailable(f"the thumbnail module {path} is missing: run bin/build-wasm") from None
        # A rebuilt module (new mtime or size) is compiled again rather than served stale.
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with _runtime_lock:
            if key not in self._modules:
                self._modules[key] = wasmtime.Module(self.engine, path.read_bytes())
            return self._modules[key]


_runtime: _Runtime | None = None
_runtime_lock = threading.Lock()
# Runtimes a forked child inherited from its parent: never used (their compiler and ticker belong to the parent)
# and never freed (freeing could take a lock some parent thread held at the fork).
_inherited_runtimes: list[_Runtime] = []


def _get_runtime() -> _Runtime:
    """This process's runtime, created on first use (never at import, so never before a fork)."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None and _runtime.pid != os.getpid():
            _inherited_runtimes.append(_runtime)
            _runtime = None
        if _runtime is None:
            _runtime = _Runtime()
        return _runtime


def _forget_runtime_after_fork() -> None:
    global _runtime, _runtime_lock
    # The lock may have been held by a parent thread at the fork; the child's copy would stay locked forever.
    _runtime_lock = threading.Lock()
    if _runtime is not None:
        _inherited_runtimes.append(_runtime)
        _runtime = None


os.register_at_fork(after_in_child=_forget_runtime_after_fork)
