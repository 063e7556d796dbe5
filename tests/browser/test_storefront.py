"""A customer orders in a real browser and watches the order being processed by a real worker, without reloading."""

import re
from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from tests.factories import ProductFactory

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# Bounded waits on what the page shows; the worker usually needs well under a second.
PROCESSING_TIMEOUT_MS = 60_000


@pytest.fixture
def catalog(transactional_db):
    ProductFactory(sku="MUG-001", name="Stoneware mug", price=Decimal("12.50"), stock=10)
    ProductFactory(sku="TEE-001", name="Organic cotton T-shirt", price=Decimal("24.00"), stock=10)
    ProductFactory(sku="CAP-001", name="Wool cap", price=Decimal("19.00"), stock=10)


def place_order(page: Page, base_url: str, *, card: str) -> None:
    """Choose two products, fill in the form and submit it, as a customer would."""
    page.goto(f"{base_url}/")
    page.get_by_label("Quantity of Stoneware mug").fill("2")
    page.get_by_label("Quantity of Organic cotton T-shirt").fill("1")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Delivery region").select_option("eu")
    page.get_by_label(card).check()
    page.get_by_role("button", name="Place order").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(base_url)}/orders/[0-9a-f-]{{36}}/$"))


def mark_document(page: Page) -> None:
    """Leave a mark in the page's JavaScript state: a reload would wipe it."""
    page.evaluate("window.notReloaded = true")


def test_an_order_placed_in_the_browser_completes_before_the_customers_eyes(
    page, live_server, catalog, start_celery_worker, screenshot
):
    place_order(page, live_server.url, card="Card that succeeds")
    status = page.locator("[data-status-label]")
    expect(status).to_have_text("Pending")  # no worker yet: the order waits in its queue
    mark_document(page)

    start_celery_worker()

    expect(status).to_have_text("Completed", timeout=PROCESSING_TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True
    timeline = page.locator("[data-timeline] li .status")
    expect(timeline).to_have_text(["Pending", "Processing", "Completed"])
    expect(page.get_by_text("Updating as it happens…")).to_be_hidden()
    expect(page.locator("[data-failure]")).to_be_hidden()
    expect(page.locator("[data-total]")).to_have_text("49.00 EUR")
    screenshot("order-completed")


def test_a_declined_card_shows_why_the_order_failed(page, live_server, catalog, start_celery_worker, screenshot):
    place_order(page, live_server.url, card="Card that is declined")
    status = page.locator("[data-status-label]")
    expect(status).to_have_text("Pending")
    mark_document(page)

    start_celery_worker()

    expect(status).to_have_text("Failed", timeout=PROCESSING_TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("[data-failure-reason]")).to_have_text("Payment declined: Your card was declined.")
    expect(page.locator("[data-failure]")).to_be_visible()
    expect(page.locator("[data-timeline] li .status")).to_have_text(["Pending", "Processing", "Failed"])
    screenshot("order-declined")


def test_a_field_error_is_shown_next_to_the_field_and_reachable_from_the_summary(page, live_server, catalog):
    page.goto(f"{live_server.url}/")
    page.get_by_label("Quantity of Wool cap").fill("1")
    page.get_by_label("Email").fill("not-an-email")
    page.get_by_role("button", name="Place order").press("Enter")

    summary = page.get_by_role("alert")
    expect(summary).to_contain_text("Your order was not placed")
    summary.get_by_role("link", name="Email: Enter a valid email address.").click()
    email = page.get_by_label("Email")
    expect(email).to_be_focused()
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#id_email_error")).to_have_text("Enter a valid email address.")
