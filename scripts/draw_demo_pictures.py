"""Draw the demo catalog's product pictures (orders/fixtures/products/), which `seed_catalog` loads.

    .venv/bin/python scripts/draw_demo_pictures.py

Pillow is a development dependency only (requirements-dev.txt): the service never draws, it ships the files this
script made, committed beside their licence (orders/fixtures/products/README.md). Deterministic: running it again
writes the same pictures. Sizes and formats vary on purpose (landscape, square, portrait; JPEG and PNG), so the
thumbnails exercise both decoders and both orientations.
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

OUTPUT = Path(__file__).resolve().parent.parent / "orders" / "fixtures" / "products"
# Drawn at this multiple of the final size and scaled down: smooth edges without an anti-aliasing renderer.
SUPERSAMPLING = 3


def canvas(width: int, height: int, top: str, bottom: str) -> Image.Image:
    """A vertical gradient from `top` to `bottom`, a studio backdrop."""
    start, end = Image.new("RGB", (1, 2), top), Image.new("RGB", (1, 2), bottom)
    gradient = Image.linear_gradient("L").resize((width, height))
    return Image.composite(end.resize((width, height)), start.resize((width, height)), gradient)


def shadow(image: Image.Image, box: tuple[float, float, float, float]) -> None:
    """A soft elliptical shadow on the floor under an object."""
    layer = Image.new("L", image.size, 0)
    ImageDraw.Draw(layer).ellipse(box, fill=90)
    layer = layer.filter(ImageFilter.GaussianBlur(image.width / 60))
    image.paste(Image.new("RGB", image.size, "#2b2f36"), mask=layer)


def mug(s: float) -> Image.Image:
    image = canvas(int(900 * s), int(675 * s), "#f3e9dc", "#d9c7b0")
    shadow(image, (260 * s, 560 * s, 640 * s, 620 * s))
    draw = ImageDraw.Draw(image)
    draw.ellipse((520 * s, 260 * s, 700 * s, 470 * s), outline="#2f5d7c", width=int(38 * s))  # handle
    draw.rounded_rectangle((250 * s, 190 * s, 580 * s, 590 * s), radius=40 * s, fill="#2f5d7c")  # body
    draw.ellipse((250 * s, 160 * s, 580 * s, 225 * s), fill="#3f7aa1")  # rim
    draw.ellipse((270 * s, 170 * s, 560 * s, 215 * s), fill="#6b3e26")  # coffee
    draw.rounded_rectangle((290 * s, 230 * s, 320 * s, 540 * s), radius=15 * s, fill="#4c86ad")  # highlight
    return image


def tee(s: float) -> Image.Image:
    image = canvas(int(800 * s), int(800 * s), "#e8f1ea", "#c4d6c8")
    draw = ImageDraw.Draw(image)
    outline = [(270, 140), (340, 120), (400, 160), (460, 120), (530, 140), (680, 250), (610, 350), (550, 310),
               (550, 680), (250, 680), (250, 310), (190, 350), (120, 250)]  # fmt: skip
    draw.polygon([(x * s, y * s) for x, y in outline], fill="#c8553d")
    draw.arc((340 * s, 80 * s, 460 * s, 200 * s), start=20, end=160, fill="#8f3a29", width=int(14 * s))  # collar
    draw.line([(250 * s, 310 * s), (250 * s, 680 * s)], fill="#a8442f", width=int(10 * s))
    draw.ellipse((360 * s, 330 * s, 440 * s, 410 * s), fill="#f2d0a4")  # a small print
    return image


def bag(s: float) -> Image.Image:
    image = canvas(int(900 * s), int(675 * s), "#eef0f4", "#cdd3dd")
    shadow(image, (270 * s, 590 * s, 630 * s, 640 * s))
    draw = ImageDraw.Draw(image)
    draw.arc((330 * s, 60 * s, 570 * s, 360 * s), start=180, end=360, fill="#a8865a", width=int(26 * s))  # strap
    draw.polygon([(280 * s, 210 * s), (620 * s, 210 * s), (650 * s, 610 * s), (250 * s, 610 * s)], fill="#e2cfa6")
    draw.rectangle((280 * s, 210 * s, 620 * s, 245 * s), fill="#cdb587")  # hem
    draw.ellipse((390 * s, 350 * s, 510 * s, 470 * s), outline="#7a5c35", width=int(12 * s))  # a printed ring
    draw.ellipse((428 * s, 388 * s, 472 * s, 432 * s), fill="#7a5c35")
    return image


def notebook(s: float) -> Image.Image:
    image = canvas(int(800 * s), int(600 * s), "#f6f1e7", "#e3d9c6")
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((210 * s, 90 * s, 590 * s, 530 * s), radius=18 * s, fill="#3b3b3b")  # cover
    draw.rounded_rectangle((230 * s, 110 * s, 570 * s, 510 * s), radius=12 * s, fill="#4a4a4a")
    draw.rectangle((520 * s, 90 * s, 545 * s, 530 * s), fill="#c0392b")  # elastic band
    draw.rectangle((290 * s, 200 * s, 470 * s, 260 * s), fill="#f6f1e7")  # label
    for line in range(3):
        y = (215 + 15 * line) * s
        draw.line([(305 * s, y), (455 * s, y)], fill="#b9ae98", width=int(3 * s))
    return image


def cap(s: float) -> Image.Image:
    image = canvas(int(900 * s), int(675 * s), "#eae6f0", "#cbc3d8")
    shadow(image, (220 * s, 410 * s, 740 * s, 470 * s))
    draw = ImageDraw.Draw(image)
    draw.chord((240 * s, 170 * s, 660 * s, 590 * s), start=180, end=360, fill="#5b4a7a")  # crown
    draw.ellipse((200 * s, 340 * s, 760 * s, 430 * s), fill="#463a60")  # brim
    draw.chord((240 * s, 170 * s, 660 * s, 590 * s), start=180, end=360, outline="#463a60", width=int(6 * s))
    draw.line([(450 * s, 170 * s), (450 * s, 380 * s)], fill="#463a60", width=int(6 * s))  # seam
    draw.ellipse((430 * s, 150 * s, 470 * s, 190 * s), fill="#7d6aa3")  # button
    return image


def lamp(s: float) -> Image.Image:
    image = canvas(int(600 * s), int(800 * s), "#f0ece2", "#d6cfbf")
    shadow(image, (150 * s, 690 * s, 450 * s, 740 * s))
    draw = ImageDraw.Draw(image)
    draw.ellipse((170 * s, 660 * s, 430 * s, 720 * s), fill="#2d3436")  # base
    draw.line([(300 * s, 690 * s), (230 * s, 420 * s), (360 * s, 250 * s)], fill="#2d3436", width=int(18 * s))
    draw.ellipse((215 * s, 405 * s, 245 * s, 435 * s), fill="#636e72")  # joint
    draw.polygon([(330 * s, 170 * s), (480 * s, 250 * s), (420 * s, 340 * s), (290 * s, 230 * s)], fill="#e1b12c")
    glow = Image.new("L", image.size, 0)
    ImageDraw.Draw(glow).polygon([(420 * s, 340 * s), (480 * s, 250 * s), (560 * s, 520 * s)], fill=70)
    image.paste(Image.new("RGB", image.size, "#fff3c4"), mask=glow.filter(ImageFilter.GaussianBlur(20 * s)))
    return image


# File name -> (drawing, format): as seed_catalog's DEMO_CATALOG names them.
PICTURES = {
    "mug.jpg": (mug, "JPEG"),
    "t-shirt.jpg": (tee, "JPEG"),
    "tote-bag.jpg": (bag, "JPEG"),
    "notebook.png": (notebook, "PNG"),
    "cap.jpg": (cap, "JPEG"),
    "desk-lamp.png": (lamp, "PNG"),
}


def main() -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for name, (drawing, image_format) in PICTURES.items():
        large = drawing(SUPERSAMPLING)
        picture = large.resize((large.width // SUPERSAMPLING, large.height // SUPERSAMPLING), Image.Resampling.LANCZOS)
        options = {"quality": 85, "optimize": True} if image_format == "JPEG" else {"optimize": True}
        picture.save(OUTPUT / name, image_format, **options)
        print(f"{OUTPUT / name}: {picture.width}x{picture.height}, {(OUTPUT / name).stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
