"""`manage.py thumbnail INPUT OUTPUT`: the heavy pool's sandbox and settings on a file; exit 0, or 1 and why."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.images import dimensions, memory_bomb_png, picture, png_header_only

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def files(tmp_path) -> Path:
    (tmp_path / "photo.jpg").write_bytes(picture(1200, 900))
    (tmp_path / "portrait.png").write_bytes(picture(600, 1000, "PNG"))
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    (tmp_path / "memory-bomb.png").write_bytes(memory_bomb_png(3000, 3000))
    return tmp_path


def manage_py(*arguments: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=ROOT,
        env=os.environ | {"DJANGO_SETTINGS_MODULE": "tests.settings"} | environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("name", "expected"), [("photo.jpg", ("PNG", 300, 225)), ("portrait.png", ("PNG", 180, 300))])
def test_a_picture_becomes_a_png_that_fits_300x300(thumbnail_module, files, capsys, name, expected):
    call_command("thumbnail", str(files / name), str(files / "out.png"))

    assert dimensions((files / "out.png").read_bytes()) == expected
    line = capsys.readouterr().out
    assert line.startswith(f"{files / 'out.png'}: {expected[1]}x{expected[2]} PNG, ")
    assert line.endswith(" MiB of memory)\n")


def test_the_command_exits_0_with_one_line_or_1_with_one_line_saying_why(thumbnail_module, files):
    made = manage_py("thumbnail", str(files / "photo.jpg"), str(files / "out.png"))
    refused = manage_py("thumbnail", str(files / "notes.txt"), str(files / "out.txt.png"))

    assert (made.returncode, made.stderr, len(made.stdout.splitlines())) == (0, "", 1)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"CommandError: {files / 'notes.txt'} is not an image the sandbox reads: "
        "neither a PNG nor a JPEG (unknown signature)\n"
    )
    assert not (files / "out.txt.png").exists()


@pytest.mark.parametrize(
    ("name", "limits", "message"),
    [
        (
            "bomb.png",
            {},
            "{dir}/bomb.png is too large (THUMBNAIL_MAX_INPUT_BYTES, THUMBNAIL_MAX_INPUT_PIXELS): the PNG header "
            "declares 100000x100000 = 10,000,000,000 pixels, more than the 25,000,000 accepted",
        ),
        (
            "photo.jpg",
            {"THUMBNAIL_MAX_INPUT_BYTES": 1000},
            "{dir}/photo.jpg is too large (THUMBNAIL_MAX_INPUT_BYTES, THUMBNAIL_MAX_INPUT_PIXELS): {size} bytes, "
            "more than the 1,000 accepted",
        ),
        (
            "photo.jpg",
            {"THUMBNAIL_FUEL_LIMIT": 1000},
            "{dir}/photo.jpg hit the sandbox's fuel limit (THUMBNAIL_FUEL_LIMIT): the module used all of its 1,000 "
            "units of fuel",
        ),
        (
            "memory-bomb.png",
            {"THUMBNAIL_MEMORY_LIMIT_BYTES": 64 << 20},
            "{dir}/memory-bomb.png hit the sandbox's memory limit (THUMBNAIL_MEMORY_LIMIT_BYTES): the module needed "
            "more than its 67,108,864 bytes of memory (an allocation of 72,000,000 bytes was refused)",
        ),
        (
            "photo.jpg",
            {"THUMBNAIL_DEADLINE_SECONDS": 0.01},
            "{dir}/photo.jpg hit the sandbox's deadline (THUMBNAIL_DEADLINE_SECONDS): the module ran past its deadline "
            "of 0.01 s",
        ),
        ("missing.jpg", {}, "cannot read {dir}/missing.jpg: No such file or directory"),
    ],
    ids=["decompression-bomb", "too-many-bytes", "fuel", "memory-bomb", "deadline", "missing-input"],
)
def test_each_refusal_and_limit_is_said_in_one_line_naming_its_setting(
    thumbnail_module, files, settings, name, limits, message
):
    for setting, value in limits.items():
        setattr(settings, setting, value)

    with pytest.raises(CommandError) as failed:
        call_command("thumbnail", str(files / name), str(files / "out.png"))

    size = f"{(files / 'photo.jpg').stat().st_size:,}"
    assert str(failed.value) == message.format(dir=files, size=size)
    assert failed.value.returncode == 1
    assert not (files / "out.png").exists()


def test_a_missing_module_says_how_to_build_it(files, tmp_path):
    result = manage_py(
        "thumbnail", str(files / "photo.jpg"), str(files / "out.png"), THUMBNAIL_WASM_PATH=str(tmp_path / "none.wasm")
    )

    assert result.returncode == 1
    assert result.stderr == (
        f"CommandError: the thumbnail module {tmp_path / 'none.wasm'} is missing: build it with bin/build-wasm "
        "(offline, from Debian's cargo, rustc, libstd-rust-dev-wasm32, lld-14 and librust-image-dev)\n"
    )
