"""The errors every app raises, and the one kind of error that background jobs retry.

An `ApplicationError` carries its HTTP status, a stable code and any headers HTTP needs with it, so one place
(`core.api_errors.error_response`) renders every error as `{"error": {"code", "message", "fields"?, "details"?}}`
and no view builds error JSON or sets an error's headers itself. The errors of the HTTP boundary live here too;
each app keeps its domain errors in its own `exceptions.py`.
"""

from http import HTTPStatus


class ApplicationError(Exception):
    code = "invalid_request"
    status = 400

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        fields: dict[str, str] | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        # {field name: message} for errors about fields of the input, e.g. {"items[0].sku": "Unknown product."}
        self.fields = fields or {}
        # Facts a client can act on, e.g. {"status": "processing"} for an order that can no longer be cancelled.
        self.details = details or {}

    @property
    def extra_headers(self) -> dict[str, str]:
        """Headers every response carrying this error must have (as Zulip's JsonableError): none by default."""
        return {}


class BadRequest(ApplicationError):
    code = "bad_request"
    status = 400


class MalformedJson(ApplicationError):
    code = "malformed_json"
    status = 400


class PermissionDenied(ApplicationError):
    code = "permission_denied"
    status = 403


class NotFound(ApplicationError):
    code = "not_found"
    status = 404


class MethodNotAllowed(ApplicationError):
    code = "method_not_allowed"
    status = 405


class Conflict(ApplicationError):
    code = "conflict"
    status = 409


class PayloadTooLarge(ApplicationError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(ApplicationError):
    code = "unsupported_media_type"
    status = 415


class InvalidInput(ApplicationError):
    code = "invalid_input"
    status = 422


class RateLimited(ApplicationError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        # Whole seconds until the window ends, as the Retry-After header wants them (RFC 9110, 10.2.3).
        self.retry_after = retry_after

    @property
    def extra_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def error_for_status(status: int, message: str | None = None) -> ApplicationError:
    """An error for a bare HTTP status (an error page, a framework's HttpError), coded after the status' phrase.

    The named errors whose code is that phrase stand for their status; any other status gets the phrase as code
    (`internal_server_error`, `content_too_large`), as clients of the API have always seen.
    """
    message = message or HTTPStatus(status).phrase + "."
    code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    named = {error.code: error for error in (BadRequest, NotFound, MethodNotAllowed, Conflict)}
    if code in named and named[code].status == status:
        return named[code](message)
    return ApplicationError(message, code=code, status=status)


class TransientError(Exception):
    """A failure that can heal by itself (a timeout, a lost connection): background jobs retry it with backoff."""
