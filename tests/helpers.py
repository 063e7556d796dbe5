import json
import time


def wait_for(predicate, *, timeout: float, interval: float = 0.1, message: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds. Returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout} s waiting for {message}.")
        time.sleep(interval)


def sandbox_charge(sandbox, idempotency_key: str) -> dict | None:
    """The payment sandbox's ledger entry for one idempotency key (what a provider's dashboard would show)."""
    raw = sandbox.redis.get(f"sandbox:charge:{idempotency_key}")
    return json.loads(raw) if raw else None
