"""The customers: N concurrent clients placing orders back to back, each order with its own Idempotency-Key.

    python -m bench.placement http --url http://127.0.0.1:8000 --orders 1000 --clients 8 --skus A,B --report r.json
    python -m bench.placement direct --variant ours --orders 1000 --clients 8 --skus A,B --report r.json

`http` speaks the API contract: POST /api/orders with JSON {"email", "region", "items": [{"sku", "quantity"}],
"payment_token"} and an Idempotency-Key header, answered by 201 {"id", "status", ...}. It is the only part of the
benchmark that knows the API. `direct` calls the variant's placement service in this process instead (Django set
up from DJANGO_SETTINGS_MODULE): for measuring the pipeline while the HTTP API is not merged yet.
The report holds every response time and every error.
"""

import argparse
import http.client
import itertools
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

REGIONS = ("eu", "us", "ap")
PAYMENT_TOKEN = "tok_visa"  # noqa: S105 - the sandbox's public test token
# Each order has one to three lines of one to three units: a basket, not a stress test of one row.
MAX_LINES = 3
MAX_QUANTITY = 3
HTTP_TIMEOUT_SECONDS = 30
# Retries under one Idempotency-Key back off from 0.2 s to 3 s: quick through a blip, gentle through an outage.
RETRY_DELAY_SECONDS = 0.2
RETRY_DELAY_MAX_SECONDS = 3.0


def order_payload(index: int, skus: list[str], chooser: random.Random) -> dict:
    lines = chooser.sample(skus, k=chooser.randint(1, min(MAX_LINES, len(skus))))
    return {
        "email": f"customer{index}@example.com",
        "region": REGIONS[index % len(REGIONS)],
        "items": [{"sku": sku, "quantity": chooser.randint(1, MAX_QUANTITY)} for sku in lines],
        "payment_token": PAYMENT_TOKEN,
    }


class HttpPlacer:
    """One client's keep-alive connection to the API (reopened whenever the server closes it).

    With `retry_seconds`, a request that fails in transport, or is answered 5xx, 409 (its first attempt is still
    running) or 429, is sent again under the same Idempotency-Key until it succeeds or the time is up: the API's
    contract is that a retry with the same key places the order at most once (the soak relies on it).
    """

    def __init__(self, url: str, *, retry_seconds: float = 0.0) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.connection: http.client.HTTPConnection | None = None
        self.retry_seconds = retry_seconds
        self.order_id: str | None = None  # the id the API gave the last order placed
        self.retries: Counter = Counter()  # why requests were sent again under their key
        self.replayed = 0  # retries answered with the first response (Idempotent-Replayed: true)

    def place(self, payload: dict) -> str | None:
        """POST the order; None on 201 with an id (kept in `order_id`), else what went wrong."""
        body = json.dumps(payload)
        headers = {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
        self.order_id = None
        give_up_at = time.monotonic() + self.retry_seconds
        for attempt in itertools.count():
            error, retryable = self._attempt(body, headers)
            if error is None or not retryable or time.monotonic() >= give_up_at:
                return error
            self.retries[error] += 1
            time.sleep(min(RETRY_DELAY_MAX_SECONDS, RETRY_DELAY_SECONDS * 2**attempt))
        return "unreachable"

    def _attempt(self, body: str, headers: dict) -> tuple[str | None, bool]:
        """One request (twice if a kept-alive connection was closed under it): (error or None, worth retrying)."""
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT_SECONDS)
            try:
                self.connection.request("POST", "/api/orders", body=body, headers=headers)
                response = self.connection.getresponse()
                answer = response.read()
            except (http.client.HTTPException, OSError) as error:
                self.close()
                if attempt == 0 and not isinstance(error, TimeoutError):
                    continue  # a keep-alive connection the server had closed: once more on a new one
                return type(error).__name__, True
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            if response.status != 201:
                return f"HTTP {response.status}", response.status >= 500 or response.status in (409, 429)
            order_id = json.loads(answer).get("id")
            if order_id is None:
                return "201 without id", False
            self.order_id = order_id
            self.replayed += response.getheader("Idempotent-Replayed", "") == "true"
            return None, False
        return "unreachable", True

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class DirectPlacer:
    """Calls the variant's placement service in this process, as the API view would."""

    def __init__(self, variant: str) -> None:
        import django

        django.setup()
        self.place_order = _ours if variant == "ours" else _naive

    def place(self, payload: dict) -> str | None:
        self.place_order(payload)
        return None

    def close(self) -> None:
        from django.db import connection

        connection.close()


def _ours(payload: dict) -> None:
    from orders.services import RequestedItem, place_order

    items = [RequestedItem(item["sku"], item["quantity"]) for item in payload.pop("items")]
    place_order(items=items, **payload)


def _naive(payload: dict) -> None:
    from bench.naive.services import create_order

    create_order(**payload)


def place(make_placer: Callable[[], object], *, first: int, orders: int, clients: int, skus: list[str]) -> dict:
    """Run `clients` threads until `orders` orders were attempted; every response time and error."""
    indexes = itertools.count(first)
    lock = threading.Lock()
    durations: list[float] = []
    errors: Counter = Counter()
    retries: Counter = Counter()
    ids: dict[int, str] = {}  # order index -> the id the API answered (HTTP only)
    replayed = 0
    last = first + orders

    def client(number: int) -> None:
        nonlocal replayed
        placer = make_placer()
        chooser = random.Random(first + number)
        try:
            while True:
                with lock:
                    index = next(indexes)
                if index >= last:
                    return
                payload = order_payload(index, skus, chooser)
                started = time.perf_counter()
                try:
                    error = placer.place(payload)
                except Exception as exception:  # noqa: BLE001 - counted and reported, never hidden
                    error = f"{type(exception).__name__}: {exception}"[:200]
                elapsed = time.perf_counter() - started
                with lock:
                    if error:
                        errors[error] += 1
                    else:
                        durations.append(elapsed)
                        if getattr(placer, "order_id", None):
                            ids[index] = placer.order_id
        finally:
            placer.close()
            with lock:
                retries.update(getattr(placer, "retries", {}))
                replayed += getattr(placer, "replayed", 0)

    started = time.time()
    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"started": started, "finished": time.time(), "durations": durations, "errors": dict(errors),
            "ids": ids, "retries": dict(retries), "replayed": replayed}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("http", "direct"))
    parser.add_argument("--url", help="the API's base URL (http mode)")
    parser.add_argument("--variant", choices=("ours", "naive"), default="ours", help="whose service (direct mode)")
    parser.add_argument("--first", type=int, default=0, help="index of the first order (emails are unique)")
    parser.add_argument("--orders", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--skus", required=True, help="comma-separated SKUs of the catalog")
    parser.add_argument("--report", required=True)
    parser.add_argument(
        "--retry-seconds", type=float, default=0.0, help="retry a failed request under its key this long (http mode)"
    )
    arguments = parser.parse_args()
    if arguments.mode == "http":
        make_placer = lambda: HttpPlacer(arguments.url, retry_seconds=arguments.retry_seconds)  # noqa: E731
    else:
        DirectPlacer(arguments.variant)  # set Django up once, before the threads
        make_placer = lambda: DirectPlacer(arguments.variant)  # noqa: E731
    result = place(
        make_placer,
        first=arguments.first,
        orders=arguments.orders,
        clients=arguments.clients,
        skus=arguments.skus.split(","),
    )
    with open(arguments.report, "w") as output:
        json.dump(result, output)


if __name__ == "__main__":
    main()
