from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber

from exports import lambda_function
from exports.lambda_function import LambdaFunction
from tests.lambda_server import LambdaServer, start_lambda_server

FUNCTION_NAME = "shop-events"
REGION = "eu-west-1"
ACCESS_KEY_ID = "AKIDEXPORTTEST"


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch, tmp_path) -> None:
    """Static fake credentials and nothing else of AWS's chain: no profile, no files, no instance metadata."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "export-test-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # Clients are cached per process: each test builds its own from its environment.
    lambda_function.lambda_client.cache_clear()
    yield
    lambda_function.lambda_client.cache_clear()


@pytest.fixture
def export_settings(settings) -> None:
    """The export turned on: a function, its region, both consumers of the outbox's events."""
    settings.EXPORT_LAMBDA_FUNCTION_NAME = FUNCTION_NAME
    settings.EXPORT_LAMBDA_REGION = REGION
    settings.OUTBOX_EVENT_CONSUMERS = ["analytics.track_events", "exports.export_events"]


@pytest.fixture
def lambda_server(monkeypatch, export_settings) -> Iterator[LambdaServer]:
    """A local Lambda on a free port, which botocore reaches through AWS_ENDPOINT_URL_LAMBDA."""
    state, server = start_lambda_server()
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", state.url)
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def stubbed() -> Iterator[tuple[LambdaFunction, Stubber]]:
    """The adapter over a real botocore client whose calls botocore's Stubber answers (and checks)."""
    client = boto3.session.Session().client(
        "lambda",
        region_name=REGION,
        config=lambda_function.client_config(connect_timeout=1.0, read_timeout=1.0),
    )
    with Stubber(client) as stubber:
        yield LambdaFunction(function_name=FUNCTION_NAME, client=client, max_payload_bytes=1_000_000), stubber
        stubber.assert_no_pending_responses()
