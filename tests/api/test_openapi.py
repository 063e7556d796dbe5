"""The OpenAPI schema is served, documented, and true: Schemathesis checks the API against it."""

import json

import hypothesis
import pytest
import schemathesis
from django.core.management import call_command
from schemathesis import checks

from proj.api import api

# The schema that /api/openapi.json serves (a test below checks that it does), read when this module is imported:
# `schemathesis.pytest.from_fixture`, which could read it from the live server, does not work with pytest 9.
schema = schemathesis.openapi.from_dict(api.get_openapi_schema())


@pytest.fixture
def shop(transactional_db, settings) -> None:
    """The demo catalog (the schema's example order names its products), and no rate limit in the way."""
    call_command("seed_catalog")
    settings.RATE_LIMITS = {"place_order": (100_000, 60)}


@schema.parametrize()
# A few dozen requests per operation keep the run to seconds; the explicit examples and the boundary cases that
# Schemathesis derives from the schema run on top of them. All of an operation's requests go to one shop, as a
# client's would: hence function-scoped fixtures under Hypothesis.
@hypothesis.settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
def test_the_api_answers_every_request_as_its_schema_says(case, shop, live_server):
    case.call_and_validate(
        base_url=live_server.url,
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_headers_conformance,
            checks.response_schema_conformance,
            checks.negative_data_rejection,
        ],
    )


def test_the_schema_is_served_at_api_openapi_json(client):
    response = client.get("/api/openapi.json")

    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(api.get_openapi_schema()))
    assert sorted(response.json()["paths"]) == [
        "/api/orders",
        "/api/orders/{order_id}",
        "/api/orders/{order_id}/cancel",
        "/api/products",
    ]


def test_the_interactive_docs_load_nothing_from_a_cdn(client):
    response = client.get("/api/docs")

    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()
    assert client.get("/static/ninja/swagger-ui-bundle.js").status_code == 200
