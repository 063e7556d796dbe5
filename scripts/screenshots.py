"""Regenerate the README's screenshots (docs/images/storefront.png, flower.png, ops.png) from a real running pipeline.

    bin/bootstrap requirements-docs.txt && apt-get install -y chromium
    .venv/bin/python scripts/screenshots.py [--web-port 8000] [--flower-port 5555] [--minutes 3] [--only NAME ...]

Uses the database and Redis of the environment (DATABASE_URL, REDIS_URL): migrates, loads the demo catalog (whose
thumbnails it schedules) and creates a staff user `ops-screenshots`. Then it starts the heavy worker, a worker (with
a slow, sometimes failing sandbox bank, so queues fill, tasks retry and a few give up), Flower and the development
server; photographs the storefront once the heavy worker has made every demo product's thumbnail in the sandbox;
then places orders in waves while the ops page is open, and photographs Flower's task list and the ops page, all with
Debian's Chromium. `--only storefront` takes that picture alone, in seconds.
"""

import argparse
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
os.environ.setdefault("DJANGO_DEBUG", "true")

import django  # noqa: E402 - the environment above must be set first
import requests  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from orders.exceptions import OrderNotCancellable  # noqa: E402
from orders.models import Product  # noqa: E402
from orders.services import RequestedItem, cancel_order, place_order  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGES = ROOT / "docs" / "images"
STAFF_USER = "ops-screenshots"
# A bank that is slow (queues fill up), resets 5 % of connections (retries) and, for tok_timeout, times out more
# often than the retries allow (the order fails and its task is dead-lettered), with backoff short enough to see it.
WORKER_ENVIRONMENT = {
    "PAYMENT_SANDBOX_LATENCY_MS": "150",
    "PAYMENT_SANDBOX_FAILURE_RATE": "0.05",
    "PAYMENT_SANDBOX_TIMEOUTS_BEFORE_SUCCESS": "12",
    "TASK_MAX_DELAY_SECONDS": "2",
}
# Payment tokens of the demo orders, by weight.
TOKENS = {"tok_visa": 85, "tok_chargeDeclined": 8, "tok_timeout": 3}
WORKER_COMMAND = ["celery", "-A", "proj", "worker", "--queues", "orders,notifications,analytics,maintenance"]
# As the Procfile's `heavy` line: the thumbnails of the demo catalog, in the sandbox.
HEAVY_WORKER_COMMAND = ["celery", "-A", "proj", "worker", "--queues", "heavy", "--concurrency", "1"]
PICTURES = ("storefront", "flower", "ops")
SKUS = ["MUG-001", "TEE-001", "BAG-001", "BOOK-001", "CAP-001"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--web-port", type=int, default=8000)
    parser.add_argument("--flower-port", type=int, default=5555)
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to place orders (default 3)")
    parser.add_argument("--only", nargs="+", choices=PICTURES, default=PICTURES, help="the pictures to take")
    arguments = parser.parse_args()

    # The heavy worker's module, as `make run` builds it (a no-op when it is up to date).
    subprocess.run([str(ROOT / "bin" / "build-wasm")], check=True)  # noqa: S603 - our own script
    call_command("migrate", verbosity=0)
    call_command("seed_catalog")
    password = secrets.token_urlsafe(16)
    staff, _ = get_user_model().objects.get_or_create(username=STAFF_USER, defaults={"is_staff": True})
    staff.is_staff = True
    staff.set_password(password)
    staff.save()
    flower_password = secrets.token_urlsafe(16)
    IMAGES.mkdir(parents=True, exist_ok=True)

    web = f"http://127.0.0.1:{arguments.web_port}"
    flower = f"http://127.0.0.1:{arguments.flower_port}"
    with ExitStack() as processes:
        processes.enter_context(running([*HEAVY_WORKER_COMMAND, "--loglevel", "WARNING", "--hostname", "heavy@%h"], {}))
        processes.enter_context(
            running(["python", "manage.py", "runserver", "--noreload", f"127.0.0.1:{arguments.web_port}"], {})
        )
        wait_until_answering(f"{web}/healthz")
        if "storefront" in arguments.only:
            photograph_storefront(web)
        if not {"flower", "ops"} & set(arguments.only):
            return
        processes.enter_context(
            running(
                [*WORKER_COMMAND, "--concurrency", "2", "--loglevel", "WARNING", "--hostname", "worker-1@%h"],
                WORKER_ENVIRONMENT,
            )
        )
        # The relay every 10 s rather than 2 s, so its ticks do not crowd the pipeline's tasks out of Flower's list.
        processes.enter_context(
            running(["celery", "-A", "proj", "beat", "--loglevel", "WARNING"], {"OUTBOX_RELAY_INTERVAL_SECONDS": "10"})
        )
        processes.enter_context(
            running(
                ["celery", "-A", "proj", "flower", "--conf=proj/flowerconfig.py", f"--port={arguments.flower_port}"],
                {"FLOWER_BASIC_AUTH": f"ops:{flower_password}"},
            )
        )
        # Flower lists the worker once it has seen its events, so it will see the tasks' events too.
        wait_until_answering(f"{flower}/api/workers?status=true", auth=("ops", flower_password), expect_body=True)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ops = browser.new_page(viewport={"width": 1440, "height": 1000})
            ops.goto(f"{web}/admin/login/?next=/ops/")
            ops.fill("#id_username", STAFF_USER)
            ops.fill("#id_password", password)
            ops.click("input[type=submit]")
            ops.wait_for_url(f"{web}/ops/")

            # Django refuses database work on a thread that runs an event loop, as Playwright's does.
            placing = threading.Thread(target=place_orders_in_waves, kwargs={"minutes": arguments.minutes})
            placing.start()
            placing.join()
            time.sleep(3)  # the last wave is being processed

            context = browser.new_context(
                viewport={"width": 1440, "height": 900},
                http_credentials={"username": "ops", "password": flower_password},
            )
            tasks = context.new_page()
            tasks.goto(f"{flower}/tasks")
            tasks.wait_for_selector("#tasks-table tbody tr td a", timeout=30_000)
            time.sleep(1)
            if "flower" in arguments.only:
                tasks.screenshot(path=str(IMAGES / "flower.png"))
                print(f"wrote {IMAGES / 'flower.png'}")

            time.sleep(7)  # the last wave drains, and the ops page polls again
            if "ops" in arguments.only:
                ops.screenshot(path=str(IMAGES / "ops.png"), full_page=True)
                print(f"wrote {IMAGES / 'ops.png'}")
            browser.close()


def photograph_storefront(web: str) -> None:
    """The catalog once every demo product has its thumbnail (made by the heavy worker), as a customer sees it."""
    deadline = time.monotonic() + 120
    while Product.objects.filter(thumbnail_status=Product.ThumbnailStatus.PENDING).exists():
        if time.monotonic() > deadline:
            raise SystemExit("The heavy worker did not make the thumbnails within 2 minutes (is the module built?).")
        time.sleep(0.5)
    failed = list(Product.objects.filter(thumbnail_status=Product.ThumbnailStatus.FAILED).values_list("sku", flat=True))
    if failed:
        raise SystemExit(f"Thumbnails failed for {', '.join(failed)}: see the admin for why.")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 900, "height": 900})
        page.goto(f"{web}/")
        page.wait_for_function("[...document.images].every((image) => image.complete && image.naturalWidth > 0)")
        # From the top of the page to the end of the product list: the thumbnails, not the delivery form below.
        products = page.locator("fieldset.products").bounding_box()
        if products is None:
            raise SystemExit("The catalog page has no product list.")
        clip = {"x": 0, "y": 0, "width": 900, "height": products["y"] + products["height"] + 16}
        page.screenshot(path=str(IMAGES / "storefront.png"), clip=clip, full_page=True)
        browser.close()
    print(f"wrote {IMAGES / 'storefront.png'}")


def place_orders_in_waves(*, minutes: float) -> None:
    """Waves of 2 to 12 orders every 5 s, a few of them cancelled at once by the customer."""
    chooser = random.Random(4)  # noqa: S311 - demo data, not security
    tokens, weights = list(TOKENS), list(TOKENS.values())
    deadline = time.monotonic() + minutes * 60
    placed = 0
    while time.monotonic() < deadline:
        for _ in range(chooser.randint(2, 12)):
            items = [RequestedItem(sku, chooser.randint(1, 3)) for sku in chooser.sample(SKUS, k=2)]
            token = chooser.choices(tokens, weights)[0]
            order = place_order(
                email=f"customer{placed}@example.com", region="eu", items=items, payment_token=token
            ).order
            placed += 1
            if chooser.random() < 0.03:
                # A worker may get to it first, as happens to customers too.
                with suppress(OrderNotCancellable):
                    cancel_order(order_id=order.pk)
        print(f"placed {placed} orders", end="\r", flush=True)
        time.sleep(5)
    print(f"placed {placed} orders")


def wait_until_answering(url: str, *, auth: tuple[str, str] | None = None, expect_body: bool = False) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, auth=auth, timeout=5)
        except requests.ConnectionError:
            pass
        else:
            if response.ok and (not expect_body or response.json()):
                return
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within 2 minutes.")


@contextmanager
def running(command: list[str], environment: dict[str, str]):
    """Run one process of the service from the virtualenv for the duration of the block."""
    executable = str(ROOT / ".venv" / "bin" / command[0])
    process = subprocess.Popen([executable, *command[1:]], cwd=ROOT, env=os.environ | environment)  # noqa: S603
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    main()
