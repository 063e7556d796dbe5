"""The function adapter for AWS Lambda: one asynchronous `Invoke` (`InvocationType='Event'`) per payload.

Another provider plugs in with the same shape (`max_payload_bytes`, `invoke_async(payload=...)`), raising
`FunctionUnavailable` for what may heal and `FunctionRefused` for a final refusal. Credentials come from boto3's
usual chain (environment, shared files, web identity, container or instance role); `AWS_ENDPOINT_URL_LAMBDA`
points the client elsewhere (the tests' local Lambda), as botocore reads it itself.
"""

import logging
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
)
from django.conf import settings

from exports.exceptions import ExportDisabled, FunctionRefused, FunctionUnavailable

logger = logging.getLogger(__name__)

# What Lambda answers when it has queued an asynchronous invocation.
ACCEPTED = 202
# Throttling (TooManyRequestsException) and the service's own failures heal by themselves; other 4xx do not.
THROTTLED = 429
SERVER_ERROR = 500
# botocore's own retries are off (one attempt): ReliableTask retries instead, with backoff and jitter up to
# TASK_MAX_DELAY_SECONDS, with the worker process free between attempts and every attempt counted
# (celery_task_retried_total). botocore's standard mode would make 3 attempts within the task, sleeping in it and
# tripling the calls against a function that is throttling us (tests/exports/test_lambda_function.py shows both).
BOTOCORE_ATTEMPTS = 1


class EventFunction(Protocol):
    """What the export needs of a function's adapter: its payload limit, and an asynchronous invocation."""

    @property
    def max_payload_bytes(self) -> int: ...

    def invoke_async(self, *, payload: bytes) -> None: ...


@dataclass(frozen=True)
class LambdaFunction:
    function_name: str
    client: Any  # botocore's Lambda client (boto3 builds its class at run time)
    # Lambda's limit for an asynchronous payload, less a margin (EXPORT_MAX_PAYLOAD_BYTES).
    max_payload_bytes: int

    def invoke_async(self, *, payload: bytes) -> None:
        """Queue one invocation of the function with `payload` (JSON bytes); Lambda runs it later, at least once."""
        try:
            response = self.client.invoke(FunctionName=self.function_name, InvocationType="Event", Payload=payload)
        except ClientError as error:
            raise _classify(error) from error
        except (HTTPClientError, ConnectionError) as error:
            raise FunctionUnavailable(f"Lambda could not be reached: {error}") from error
        except (NoCredentialsError, CredentialRetrievalError) as error:
            # The chain found nothing this time; a role's credentials can be briefly unavailable. Retries end in a
            # dead letter if it lasts.
            raise FunctionUnavailable(f"No AWS credentials for Lambda: {error}") from error
        status = response["StatusCode"]
        if status != ACCEPTED:
            raise FunctionRefused(f"Lambda answered {status} to an asynchronous invocation, not {ACCEPTED}.")
        logger.info(
            "Invoked %s with %d bytes (request %s)",
            self.function_name,
            len(payload),
            response.get("ResponseMetadata", {}).get("RequestId", "?"),
        )


def _classify(error: ClientError) -> Exception:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    description = f"Lambda answered {status} {code}: {message}"
    if code == "TooManyRequestsException" or status == THROTTLED or status >= SERVER_ERROR:
        return FunctionUnavailable(description)
    return FunctionRefused(description)


def get_function() -> LambdaFunction:
    """The function EXPORT_LAMBDA_FUNCTION_NAME names, with this process's client for its region."""
    if not settings.EXPORT_LAMBDA_FUNCTION_NAME:
        raise ExportDisabled("No function is configured (EXPORT_LAMBDA_FUNCTION_NAME is empty).")
    return LambdaFunction(
        function_name=settings.EXPORT_LAMBDA_FUNCTION_NAME,
        client=lambda_client(
            region=settings.EXPORT_LAMBDA_REGION or None,
            connect_timeout=settings.EXPORT_CONNECT_TIMEOUT_SECONDS,
            read_timeout=settings.EXPORT_READ_TIMEOUT_SECONDS,
        ),
        max_payload_bytes=settings.EXPORT_MAX_PAYLOAD_BYTES,
    )


@cache
def lambda_client(*, region: str | None, connect_timeout: float, read_timeout: float) -> Any:
    """One Lambda client per process and configuration: building one loads botocore's models (tens of ms).

    Made on first use, so in a prefork child after the fork: a client made before would share its connection
    pool's sockets with every child.
    """
    # A session of its own: boto3's default session is not safe to share between the threads of a threads pool.
    return boto3.session.Session().client(
        "lambda", region_name=region, config=client_config(connect_timeout=connect_timeout, read_timeout=read_timeout)
    )


def client_config(*, connect_timeout: float, read_timeout: float) -> Config:
    """botocore's configuration for the export: our timeouts, and no retries of its own (BOTOCORE_ATTEMPTS)."""
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": BOTOCORE_ATTEMPTS},
    )
