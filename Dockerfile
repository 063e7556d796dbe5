# One image for every process: web (gunicorn), the workers, beat, Flower and the migrate Job differ only by command.
# It runs as a non-root user on a read-only root file system (deploy/k8s): at run time nothing is written outside
# /tmp and /run/worker, the pods' emptyDir volumes, and /app/var/media, the media volume (MEDIA_ROOT). So everything
# that would be written later is made here.

# The thumbnail sandbox's module (var/wasm/thumbnail.wasm), built by bin/build-wasm as on a developer's machine:
# offline, from Debian bookworm's Rust and crates (the crate pins bookworm's rustc 1.63, lld-14 and image 0.24), so
# the image's module is the one the tests ran. Only the module leaves this stage: its toolchain is not shipped.
# The date-stamped tag is one fixed bookworm snapshot, the one the development machines run (12.11).
FROM debian:bookworm-20250520-slim AS wasm
# bin/build-wasm's `packages` (tests/deploy/test_dockerfile.py keeps the two lists equal). No apt lists cleaned up:
# this stage is discarded.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cargo rustc libstd-rust-dev-wasm32 lld-14 librust-image-dev
WORKDIR /build
# What the build reads, and nothing else, so that a change elsewhere in the checkout reuses this layer.
COPY bin/build-wasm bin/build-wasm
COPY wasm/thumbnail wasm/thumbnail
RUN bin/build-wasm

# The Python minor the test suite runs on (3.13), by its full tag: a rebuild gets this interpreter, not the newest 3.13.
FROM python:3.13.9-slim-bookworm

# No bytecode written beside the code at run time (compiled below instead), logs unbuffered, no pip cache kept.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements.txt .
# pip compiles the libraries' bytecode as it installs them.
RUN pip install -r requirements.txt

COPY . .
# Our own bytecode, so that imports on the read-only file system do not recompile every module at every start.
RUN python -m compileall -q -j 0 /app
# Static files under hashed, compressed names for WhiteNoise (settings need a SECRET_KEY, not a real one, for this).
RUN DJANGO_DEBUG=false SECRET_KEY=collectstatic-only python manage.py collectstatic --no-input

# At THUMBNAIL_WASM_PATH's default (BASE_DIR is /app): the heavy pool dead-letters every thumbnail without it.
COPY --from=wasm /build/var/wasm/thumbnail.wasm /app/var/wasm/thumbnail.wasm

# The code stays root's (read-only to the service). The user has no home: a process that tries to write one fails
# loudly here, instead of on the read-only root in a pod. The manifests run as this same uid (runAsUser: 10001).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin app
# MEDIA_ROOT's default, the mount point of the media volume (compose) or claim (deploy/k8s). The user's own: Docker
# fills a new named volume with the mount point's owner, so compose's `media` volume is writable by the service.
RUN install -d -o 10001 -g 10001 -m 0755 /app/var/media
USER 10001:10001

EXPOSE 8000 5555 9808
# --no-control-socket: gunicorn would otherwise create $HOME/.gunicorn/ for its control socket.
CMD ["gunicorn", "proj.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--no-control-socket"]
