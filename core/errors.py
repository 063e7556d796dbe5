"""The errors every app raises, and the one kind of error that background jobs retry.

An `ApplicationError` carries its HTTP status and a stable code, so one place (the API's error handler) renders
every error as `{"error": {"code", "message", "fields"}}` and views never build error JSON themselves.
"""


class ApplicationError(Exception):
    code = "invalid_request"
    status = 400

    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None, fields=None, details=None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        # {field name: message} for errors about fields of the input, e.g. {"items[0].sku": "Unknown product."}
        self.fields = fields or {}
        # Facts a client can act on, e.g. {"status": "processing"} for an order that can no longer be cancelled.
        self.details = details or {}


class NotFound(ApplicationError):
    code = "not_found"
    status = 404


class Conflict(ApplicationError):
    code = "conflict"
    status = 409


class InvalidInput(ApplicationError):
    code = "invalid_input"
    status = 422


class TransientError(Exception):
    """A failure that can heal by itself (a timeout, a lost connection): background jobs retry it with backoff."""
