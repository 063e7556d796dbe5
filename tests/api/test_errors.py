"""Every error the API answers has one shape, and no input a client can send is answered with a 500."""

import json

import pytest
from django.test import Client

from orders import api as orders_api
from orders.models import Order
from tests.api.conftest import ORDER, post_json

pytestmark = pytest.mark.django_db


def error(code: str, message: str, **extra) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def with_item(**item) -> dict:
    return {**ORDER, "items": [{"sku": "MUG-001", "quantity": 1}, item]}


def invalid(**fields) -> dict:
    return error("invalid_input", "The request is invalid.", fields=fields)


def test_a_body_that_is_not_json_is_400_saying_why(client, catalog):
    response = post_json(client, "/api/orders", "{")

    assert response.status_code == 400
    assert response.json() == error(
        "malformed_json",
        "The request body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 "
        "(char 1).",
    )
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        '{"email": "ada@example.com",}',
        b"\xff\xfe{",
        "[" * 10_000 + "]" * 10_000,
        '{"quantity": NaN}',
        "-Infinity",
        "{'email': 'ada'}",
    ],
    ids=["trailing-comma", "not-utf8", "nested-too-deep", "nan", "infinity", "single-quotes"],
)
def test_every_body_that_is_not_json_is_400(client, catalog, body):
    response = post_json(client, "/api/orders", body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    # The parser's own words follow; they vary between Python versions.
    assert response.json()["error"]["message"].startswith("The request body is not valid JSON: ")
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            with_item(sku="NOPE-1", quantity=1),
            error(
                "unknown_product",
                "The order names products that do not exist.",
                fields={"items[1].sku": "Unknown product 'NOPE-1'."},
            ),
        ),
        (
            with_item(sku="TEE-001", quantity=0),
            invalid(**{"items[1].quantity": "Input should be greater than or equal to 1"}),
        ),
        (with_item(sku="TEE-001", quantity="2"), invalid(**{"items[1].quantity": "Input should be a valid integer"})),
        (with_item(sku="TEE-001", quantity=1.5), invalid(**{"items[1].quantity": "Input should be a valid integer"})),
        (with_item(sku="TEE-001", quantity=True), invalid(**{"items[1].quantity": "Input should be a valid integer"})),
        (
            with_item(sku="TEE-001", quantity=101),
            error(
                "invalid_input",
                "The order is invalid.",
                fields={"items[1].quantity": "At most 100 units of one product per order."},
            ),
        ),
        (
            {**ORDER, "email": "ada@"},
            error("invalid_input", "The order is invalid.", fields={"email": "Enter a valid email address."}),
        ),
        (
            {**ORDER, "region": "mars"},
            error(
                "invalid_input", "The order is invalid.", fields={"region": "Unknown region; choose one of eu, us, ap."}
            ),
        ),
        ({**ORDER, "items": []}, invalid(items="List should have at least 1 item after validation, not 0")),
        ({**ORDER, "colour": "red"}, invalid(colour="Extra inputs are not permitted")),
        (
            {"email": "ada@example.com"},
            invalid(region="Field required", items="Field required", payment_token="Field required"),
        ),
        (with_item(sku="MUG\u0000", quantity=1), invalid(**{"items[1].sku": "Control characters are not allowed."})),
        ({**ORDER, "payment_token": "x" * 65}, invalid(payment_token="String should have at most 64 characters")),
        (
            {**ORDER, "push_topic": "not a topic"},
            error(
                "invalid_input",
                "The order is invalid.",
                fields={"push_topic": "A push topic has 1 to 64 letters, digits, '-' or '_'."},
            ),
        ),
        ([ORDER], invalid(body="Input should be a valid dictionary or object to extract fields from")),
        ("", invalid(body="Field required")),
    ],
    ids=[
        "unknown-sku",
        "zero-quantity",
        "quantity-as-string",
        "fractional-quantity",
        "boolean-quantity",
        "too-many-units",
        "bad-email",
        "unknown-region",
        "no-items",
        "unknown-field",
        "missing-fields",
        "control-character",
        "long-token",
        "bad-push-topic",
        "not-an-object",
        "empty-body",
    ],
)
def test_invalid_input_is_422_naming_the_field(client, catalog, body, expected):
    response = post_json(client, "/api/orders", body)

    assert response.status_code == 422
    assert response.json() == expected
    assert not Order.objects.exists()


def test_a_string_that_is_not_unicode_is_422(client, catalog):
    body = json.dumps(ORDER).replace("ada@example.com", "\\ud800@example.com")

    response = post_json(client, "/api/orders", body)

    assert response.status_code == 422
    assert response.json() == invalid(
        email="Input should be a valid string, unable to parse raw data as a unicode string"
    )


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/orders", "POST"),
        ("PUT", "/api/products", "GET"),
        ("GET", "/api/orders/8e03978e-40d5-43e8-bc93-6894a57f9324/cancel", "POST"),
        ("PATCH", "/api/orders/8e03978e-40d5-43e8-bc93-6894a57f9324", "GET"),
    ],
)
def test_a_method_the_url_does_not_accept_is_405(client, method, path, allowed):
    response = client.generic(method, path)

    assert response.status_code == 405
    assert response["Allow"] == allowed
    assert response.json() == error("method_not_allowed", f"Method not allowed; this URL accepts {allowed}.")


def test_a_body_larger_than_the_limit_is_413_before_it_is_read(client, catalog, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = json.dumps(ORDER)
    just_fits = body[:-1] + " " * (1024 - len(body)) + "}"

    too_large = post_json(client, "/api/orders", just_fits + " ")
    fits = post_json(client, "/api/orders", just_fits)

    assert too_large.status_code == 413
    assert too_large.json() == error("payload_too_large", "The request body is larger than 1024 bytes.")
    assert fits.status_code == 201
    assert Order.objects.count() == 1


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/json"]
)
def test_a_body_that_is_not_declared_json_is_415(client, catalog, content_type):
    response = client.post("/api/orders", json.dumps(ORDER), content_type=content_type)

    assert response.status_code == 415
    assert response.json() == error(
        "unsupported_media_type", "Send the request body as JSON, with the header Content-Type: application/json."
    )
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.shop+json"]
)
def test_json_media_types_are_accepted(client, catalog, content_type):
    response = client.post("/api/orders", json.dumps(ORDER), content_type=content_type)

    assert response.status_code == 201


def test_a_content_length_that_is_not_a_number_is_400(client, catalog):
    response = client.post("/api/orders", json.dumps(ORDER), content_type="application/json", CONTENT_LENGTH="many")

    assert response.status_code == 400
    assert response.json() == error("bad_request", "The Content-Length header is not a number.")


def test_an_unknown_api_url_is_404(client):
    response = client.get("/api/nothing/here")

    assert response.status_code == 404
    assert response.json() == error("not_found", "No API endpoint at this URL.")


def test_a_bug_is_a_500_in_the_same_shape_and_is_logged(catalog, monkeypatch, caplog):
    def broken_selector():
        raise RuntimeError("a bug")

    monkeypatch.setattr(orders_api.selectors, "list_products", broken_selector)

    response = Client(raise_request_exception=False).get("/api/products")

    assert response.status_code == 500
    assert response.json() == error("internal_server_error", "Internal Server Error.")
    assert next(record.exc_info[1] for record in caplog.records if record.exc_info).args == ("a bug",)


def test_pages_outside_the_api_keep_django_s_own_error_pages(client):
    response = client.get("/no/such/page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
