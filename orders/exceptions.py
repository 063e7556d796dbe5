"""The orders app's errors: the API's refusals (each with its code and status) and the payment adapter's outcomes."""

from core.errors import ApplicationError, Conflict, InvalidInput, NotFound, TransientError


class OrderNotFound(NotFound):
    code = "order_not_found"


class UnknownProduct(InvalidInput):
    code = "unknown_product"


class ProductNotFound(NotFound):
    code = "product_not_found"


class InvalidProductImage(InvalidInput):
    """An upload that is no image the thumbnail sandbox would take (format, bytes, declared pixels)."""

    code = "invalid_product_image"


class OrderNotCancellable(Conflict):
    code = "order_not_cancellable"


class OrderNotRetryable(Conflict):
    code = "order_not_retryable"


class InvalidIdempotencyKey(ApplicationError):
    code = "invalid_idempotency_key"
    status = 400


class IdempotencyKeyInUse(Conflict):
    code = "idempotency_key_in_use"


class IdempotencyKeyReused(InvalidInput):
    code = "idempotency_key_reused"


class PaymentDeclined(Exception):
    """The provider refused the payment: final, recorded on the order, never retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PaymentGatewayUnavailable(TransientError):
    """The provider did not answer (timeout, connection error): retry with the same idempotency key."""
