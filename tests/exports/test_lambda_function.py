"""The Lambda adapter: the exact Invoke it makes, how it reads each of Lambda's answers, and botocore's retries."""

import re

import boto3
import pytest
from botocore.exceptions import ClientError

from core.errors import TransientError
from exports import lambda_function
from exports.exceptions import ExportDisabled, FunctionRefused, FunctionUnavailable
from tests.exports.conftest import ACCESS_KEY_ID, FUNCTION_NAME, REGION

PAYLOAD = b'{"version":1,"events":[{"event_id":"9e1f6c1e-3c5e-4d0e-9a59-6d7f0f4c1b2a","type":"order_placed"}]}'
EXPECTED_INVOKE = {"FunctionName": FUNCTION_NAME, "InvocationType": "Event", "Payload": PAYLOAD}


def test_an_invocation_is_asynchronous_with_the_payload_bytes_as_given(stubbed):
    function, stubber = stubbed
    stubber.add_response("invoke", {"StatusCode": 202, "Payload": b""}, EXPECTED_INVOKE)

    assert function.invoke_async(payload=PAYLOAD) is None


# Throttling and the service's own failures (5xx, including the 502s of a function being set up) heal by
# themselves; every other 4xx is final.
@pytest.mark.parametrize(
    ("code", "status", "error_class"),
    [
        ("TooManyRequestsException", 429, FunctionUnavailable),
        ("ServiceException", 500, FunctionUnavailable),
        ("ResourceNotReadyException", 502, FunctionUnavailable),
        ("EC2ThrottledException", 502, FunctionUnavailable),
        ("ResourceNotFoundException", 404, FunctionRefused),
        ("AccessDeniedException", 403, FunctionRefused),
        ("RequestTooLargeException", 413, FunctionRefused),
        ("InvalidRequestContentException", 400, FunctionRefused),
        ("ResourceConflictException", 409, FunctionRefused),
    ],
)
def test_each_error_of_lambda_is_retried_or_refused(stubbed, code, status, error_class):
    function, stubber = stubbed
    stubber.add_client_error(
        "invoke", service_error_code=code, service_message="from Lambda", http_status_code=status,
        expected_params=EXPECTED_INVOKE,
    )  # fmt: skip

    with pytest.raises(error_class) as raised:
        function.invoke_async(payload=PAYLOAD)

    assert str(raised.value) == f"Lambda answered {status} {code}: from Lambda"
    assert isinstance(raised.value, TransientError) is (error_class is FunctionUnavailable)
    assert isinstance(raised.value.__cause__, ClientError)


def test_an_answer_other_than_queued_is_refused(stubbed):
    # 200 is a synchronous invocation's answer: the function ran (or an endpoint that is not Lambda answered).
    function, stubber = stubbed
    stubber.add_response("invoke", {"StatusCode": 200, "Payload": b"null"}, EXPECTED_INVOKE)

    with pytest.raises(FunctionRefused, match=r"^Lambda answered 200 to an asynchronous invocation, not 202\.$"):
        function.invoke_async(payload=PAYLOAD)


def test_without_a_function_name_the_export_is_off(settings):
    settings.EXPORT_LAMBDA_FUNCTION_NAME = ""

    with pytest.raises(ExportDisabled):
        lambda_function.get_function()


def test_the_configured_function_is_invoked_over_http_signed_for_its_region(lambda_server):
    # when
    lambda_function.get_function().invoke_async(payload=PAYLOAD)

    # then: the request Lambda's API expects, signed with the credentials of AWS's chain (here the environment)
    [invocation] = lambda_server.invocations
    assert (invocation.function_name, invocation.invocation_type, invocation.body) == (FUNCTION_NAME, "Event", PAYLOAD)
    assert re.match(
        rf"^AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/\d{{8}}/{REGION}/lambda/aws4_request, ",
        invocation.authorization,
    )


@pytest.mark.parametrize("code", ["TooManyRequestsException", "ServiceException"])
def test_botocore_makes_one_attempt_where_its_default_would_make_three(lambda_server, code):
    # given: a function that refuses the next six requests
    lambda_server.next_errors = [code] * 6

    # when: our client (retries left to ReliableTask), then one with botocore's defaults
    with pytest.raises(FunctionUnavailable):
        lambda_function.get_function().invoke_async(payload=PAYLOAD)
    ours = len(lambda_server.invocations)
    default_client = boto3.session.Session().client("lambda", region_name=REGION)
    with pytest.raises(ClientError):
        default_client.invoke(FunctionName=FUNCTION_NAME, InvocationType="Event", Payload=PAYLOAD)

    # then: one request for ours; botocore's standard mode retried the throttling and the 500 twice by itself
    assert ours == 1
    assert len(lambda_server.invocations) - ours == 3


def test_an_unreachable_endpoint_is_retried(export_settings, monkeypatch):
    # Port 9 (discard) has no listener here: the connection is refused at once.
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", "http://127.0.0.1:9")

    with pytest.raises(FunctionUnavailable, match=r"^Lambda could not be reached: Could not connect"):
        lambda_function.get_function().invoke_async(payload=PAYLOAD)
