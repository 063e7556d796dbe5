"""Images for the thumbnail tests: pictures drawn with Pillow (a test dependency), and hostile ones built by hand."""

import io
import struct
import zlib

from django.core.files.base import ContentFile
from PIL import Image, ImageDraw


def picture(width: int, height: int, image_format: str = "JPEG") -> bytes:
    """A deterministic picture with a gradient and shapes, encoded as JPEG or PNG."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for step in range(8):
        box = (step * width // 10, step * height // 12, (step + 2) * width // 10, (step + 3) * height // 12)
        draw.ellipse(box, fill=(40 * step % 256, 200 - 20 * step, 90 + 15 * step))
    buffer = io.BytesIO()
    image.save(buffer, image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    return buffer.getvalue()


def upload(data: bytes, name: str) -> ContentFile:
    """An image as `set_product_image` takes it (the admin hands it an UploadedFile, the same kind of File)."""
    return ContentFile(data, name=name)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A decompression bomb's start: a well-formed PNG header declaring any size, with (almost) no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


def memory_bomb_png(width: int, height: int) -> bytes:
    """A real PNG of one colour, 16-bit RGBA: a few hundred KB on disk, 8 bytes per pixel once decoded."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x7f" * (width * 8)  # filter type 0, then the row's samples
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def dimensions(png: bytes) -> tuple[str, int, int]:
    """(format, width, height) of an image, as Pillow reads it."""
    image = Image.open(io.BytesIO(png))
    return image.format, image.width, image.height
