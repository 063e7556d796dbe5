"""The Dockerfile, read as Docker reads it: the image contains the thumbnail module its build stage makes with
bin/build-wasm, and the mount point of the media volume. No Docker engine: tests/deploy/dockerfile.py parses it."""

import re
import shlex
from pathlib import PurePosixPath

import pytest

from tests.deploy import dockerfile

# A base image by a tag that names one build: Python's patch release on a Debian release, or Debian's dated
# snapshot of a release. `python:3.13`, `debian:bookworm-slim` or `latest` would give a rebuild whatever is newest.
PINNED_BASES = [
    re.compile(r"python:\d+\.\d+\.\d+-slim-[a-z]+"),
    re.compile(r"debian:[a-z]+-\d{8}-slim"),
]


def module_copy() -> tuple[str, PurePosixPath, PurePosixPath]:
    """(stage, source in it, destination in the image) of the image's one COPY --from: the module's."""
    (copy,) = [argument for argument in dockerfile.image().arguments("COPY") if argument.startswith("--from=")]
    stage, source, destination = shlex.split(copy)
    return stage.removeprefix("--from="), PurePosixPath(source), PurePosixPath(destination)


def build_stage() -> dockerfile.Stage:
    """The stage the image copies the module from."""
    return dockerfile.stage(module_copy()[0])


def test_the_parser_reads_stages_continued_lines_and_comments_as_docker_does():
    parsed = dockerfile.instructions(
        "# a comment\nFROM debian:bookworm-20250520-slim AS build\nRUN apt-get update \\\n"
        "    # a comment inside the continued line\n    && apt-get install -y cargo\nENV A=1 B=2\n"
    )

    assert parsed == [
        ("FROM", "debian:bookworm-20250520-slim AS build"),
        ("RUN", "apt-get update && apt-get install -y cargo"),
        ("ENV", "A=1 B=2"),
    ]
    assert [(stage.image, stage.name) for stage in dockerfile.stages()] == [
        ("debian:bookworm-20250520-slim", "wasm"),
        ("python:3.13.9-slim-bookworm", None),
    ]


def test_the_image_has_the_module_the_build_stage_made_at_the_path_the_settings_default_to():
    _stage, source, destination = module_copy()
    stage = build_stage()

    # The module bin/build-wasm writes, relative to the checkout's root: the build stage's WORKDIR.
    assert source == stage.workdir / dockerfile.shell_variable("output")
    assert (
        destination == dockerfile.path_in_image("THUMBNAIL_WASM_PATH") == PurePosixPath("/app/var/wasm/thumbnail.wasm")
    )
    assert stage.arguments("RUN")[-1] == "bin/build-wasm"
    assert stage is not dockerfile.image()


def test_the_build_stage_installs_every_package_bin_build_wasm_needs():
    (install,) = [command for command in build_stage().arguments("RUN") if "apt-get install" in command]
    installed = shlex.split(install.partition("apt-get install")[2])

    # Exactly the script's list: a package missing here makes the script exit 3 and the build fail; one more would
    # be a package the script does not know it needs.
    assert [word for word in installed if not word.startswith("-")] == dockerfile.shell_array("packages")
    assert "--no-install-recommends" in installed
    assert dockerfile.shell_array("packages") == [
        "cargo",
        "rustc",
        "libstd-rust-dev-wasm32",
        "lld-14",
        "librust-image-dev",
    ]


def test_the_build_stage_copies_the_script_and_every_source_it_builds_from_in_the_checkout_s_layout():
    stage = build_stage()
    copy_lines = stage.arguments("COPY")
    copies = [shlex.split(arguments) for arguments in copy_lines]
    crate = dockerfile.shell_variable("crate")
    # The sources in the checkout (the others, /usr/..., are the Debian packages').
    sources = [
        source.replace("$crate", crate) for source in dockerfile.shell_array("sources") if source.startswith("$crate")
    ]

    # The script finds the crate from its own location (`cd "$(dirname "$0")/.."`): each copy keeps its path.
    assert all(source == destination for source, destination in copies)
    copied = [PurePosixPath(source) for source, _destination in copies]
    assert PurePosixPath("bin/build-wasm") in copied
    assert sources == [f"{crate}/Cargo.toml", f"{crate}/Cargo.lock", f"{crate}/.cargo/config.toml", f"{crate}/src"]
    for source in sources:
        assert any(PurePosixPath(source).is_relative_to(path) for path in copied), source
        assert not dockerfile.is_excluded_from_context(source), source
    # The toolchain first, then the sources, then the build: a change to the crate does not reinstall the toolchain.
    (install,) = [command for command in stage.arguments("RUN") if "apt-get install" in command]
    copied_at = [stage.index("COPY", line) for line in copy_lines]
    assert stage.index("RUN", install) < min(copied_at) < max(copied_at) < stage.index("RUN", "bin/build-wasm")


def test_the_module_is_built_in_the_image_because_the_context_leaves_var_out():
    # What the checkout built is not sent to Docker: the image can only have the module its own stage builds.
    assert dockerfile.is_excluded_from_context("var/wasm/thumbnail.wasm")
    assert dockerfile.is_excluded_from_context("orders/__pycache__/models.cpython-313.pyc")
    assert not dockerfile.is_excluded_from_context("wasm/thumbnail/src/lib.rs")


@pytest.mark.parametrize("stage", dockerfile.stages(), ids=lambda stage: stage.name or "image")
def test_every_base_image_is_pinned_by_its_full_tag(stage):
    assert any(pattern.fullmatch(stage.image) for pattern in PINNED_BASES), stage.image


def test_the_media_mount_point_is_made_in_the_image_and_owned_by_the_image_s_user():
    image = dockerfile.image()
    (user,) = image.arguments("USER")
    uid, gid = user.split(":")
    media_root = dockerfile.path_in_image("MEDIA_ROOT")
    (make,) = [command for command in image.arguments("RUN") if str(media_root) in shlex.split(command)]

    assert media_root == PurePosixPath("/app/var/media")
    assert shlex.split(make) == ["install", "-d", "-o", uid, "-g", gid, "-m", "0755", str(media_root)]
    # As root, before the image switches to its user.
    assert image.index("RUN", make) < image.index("USER", user)
