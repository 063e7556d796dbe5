from proj.errors import Conflict, InvalidInput, NotFound


class OrderNotFound(NotFound):
    code = "order_not_found"


class UnknownProduct(InvalidInput):
    code = "unknown_product"


class OrderNotCancellable(Conflict):
    code = "order_not_cancellable"


class OrderNotRetryable(Conflict):
    code = "order_not_retryable"


class OutOfStock(Exception):
    """Not enough stock to reserve: a final outcome recorded on the order, never retried."""

    def __init__(self, skus: list[str]) -> None:
        super().__init__(f"Out of stock: {', '.join(skus)}")
        self.skus = skus
