import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from tests.conftest import project_worker

# Debian's Chromium (system-packages.txt, installed by `make test`): Playwright's own browser download cannot run here.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No calls home: the machine has no network beyond the package registries, and they only slow the browser.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def page(tmp_path, monkeypatch) -> Iterator[Page]:
    """A page of a headless Chromium with a fresh profile, at a phone's width."""
    if not CHROMIUM.exists():
        pytest.fail(f"No Chromium at {CHROMIUM}: `make test` installs it (bin/install-system-packages).")
    # Playwright's sync API keeps an event loop in this thread, which Django takes for an async context and so
    # refuses database queries. The test's queries still run synchronously, one at a time: allow them.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "profile",
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 390, "height": 844},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


@pytest.fixture
def start_celery_worker(transactional_db) -> Iterator[Callable[[], None]]:
    """Start a real Celery worker (threads, real Redis) when the test says so, like tests/conftest.py's
    `celery_worker`: a test can first see an order waiting, then see it processed."""
    with contextlib.ExitStack() as stack:

        def start() -> None:
            stack.enter_context(project_worker())

        yield start


@pytest.fixture
def screenshot(page) -> Callable[[str], Path]:
    """Save the whole page as test-artifacts/<name>.png (CI keeps the folder)."""

    def save(name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return save
