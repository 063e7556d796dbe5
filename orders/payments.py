"""The payment gateway adapter, and a sandbox that behaves like a real provider in test mode.

A real provider (Stripe) plugs in by implementing `PaymentGateway.charge`: charge with an idempotency key, raise
`PaymentDeclined` for a final refusal and `PaymentGatewayUnavailable` for anything that may heal (timeouts,
connection errors, 5xx), and return the same charge again when the same idempotency key comes back.
"""

import json
import random
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Protocol

import redis
from django.conf import settings
from django.utils.module_loading import import_string

from orders.exceptions import PaymentDeclined, PaymentGatewayUnavailable


@dataclass(frozen=True)
class Charge:
    id: str
    amount: Decimal
    currency: str


class PaymentGateway(Protocol):
    def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str, description: str
    ) -> Charge: ...


@cache
def get_gateway() -> PaymentGateway:
    return import_string(settings.PAYMENT_GATEWAY)()


class SandboxGateway:
    """Test-mode payments with a ledger in Redis, outside our database transactions, like a remote provider.

    Tokens: `tok_visa` succeeds; `tok_chargeDeclined` is declined; `tok_timeout` charges but times out
    PAYMENT_SANDBOX_TIMEOUTS_BEFORE_SUCCESS times before answering (the retry finds the charge by its idempotency
    key, as with a real provider). PAYMENT_SANDBOX_LATENCY_MS and PAYMENT_SANDBOX_FAILURE_RATE simulate a slow or
    flaky network for benchmarks and fault tests. Any other token is declined as invalid.
    """

    TOKENS = {
        "tok_visa": "card that succeeds",
        "tok_chargeDeclined": "card that is declined",
        "tok_timeout": "card whose bank is slow",
    }
    # Real providers keep idempotency keys for about a day; the ledger keeps charges a month.
    LEDGER_TTL_SECONDS = 30 * 24 * 3600

    def __init__(self) -> None:
        self.redis = redis.Redis.from_url(
            settings.PAYMENT_SANDBOX_REDIS_URL, socket_timeout=5, socket_connect_timeout=2, decode_responses=True
        )

    def charge(self, *, amount: Decimal, currency: str, token: str, idempotency_key: str, description: str) -> Charge:
        self._simulate_network()
        try:
            record = self._record_once(idempotency_key, amount=amount, currency=currency, token=token)
            if token == "tok_timeout":
                answers = self.redis.incr(f"sandbox:timeouts:{idempotency_key}")
                self.redis.expire(f"sandbox:timeouts:{idempotency_key}", self.LEDGER_TTL_SECONDS)
                if answers <= settings.PAYMENT_SANDBOX_TIMEOUTS_BEFORE_SUCCESS:
                    raise PaymentGatewayUnavailable("The payment provider timed out (sandbox tok_timeout).")
        except redis.RedisError as error:
            raise PaymentGatewayUnavailable(f"The payment provider is unreachable: {error}") from error
        if record["outcome"] == "declined":
            raise PaymentDeclined(record["decline_reason"])
        return Charge(id=record["id"], amount=Decimal(record["amount"]), currency=record["currency"])

    def _simulate_network(self) -> None:
        if settings.PAYMENT_SANDBOX_LATENCY_MS:
            time.sleep(settings.PAYMENT_SANDBOX_LATENCY_MS / 1000)
        if random.random() < settings.PAYMENT_SANDBOX_FAILURE_RATE:  # noqa: S311 - simulation, not security
            raise PaymentGatewayUnavailable("The payment provider reset the connection (sandbox failure rate).")

    def _record_once(self, idempotency_key: str, *, amount: Decimal, currency: str, token: str) -> dict:
        if token == "tok_chargeDeclined":
            outcome, decline_reason = "declined", "Your card was declined."
        elif token in self.TOKENS:
            outcome, decline_reason = "succeeded", ""
        else:
            outcome, decline_reason = "declined", "Your card number is invalid."
        record = {
            "id": f"ch_sandbox_{uuid.uuid4().hex[:24]}",
            "amount": str(amount),
            "currency": currency,
            "token": token,
            "outcome": outcome,
            "decline_reason": decline_reason,
        }
        key = f"sandbox:charge:{idempotency_key}"
        # SET NX: of two concurrent requests with one key, exactly one creates the charge; both get it back.
        if not self.redis.set(key, json.dumps(record), nx=True, ex=self.LEDGER_TTL_SECONDS):
            stored = self.redis.get(key)
            if stored is None:  # expired between the two commands: the next attempt creates it
                raise PaymentGatewayUnavailable("The payment provider lost the charge it was creating.")
            record = json.loads(stored)
            if record["amount"] != str(amount) or record["currency"] != currency:
                # What Stripe answers when one key is reused with other parameters: a bug on our side.
                raise ValueError(f"Idempotency key {idempotency_key} was used for a different charge.")
        return record
