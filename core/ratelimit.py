"""Rate limits per client, counted in Redis so that every web process shares one count.

A fixed window per client and scope: the first hit of a window creates a counter that expires with the window,
each hit increments it atomically, and past the limit the client is told how many seconds remain (`Retry-After`).
A window allows up to twice the limit across its boundary; that burst is the price of one round trip per request.

The limit protects the service; it must not take it down. When Redis cannot be reached the request is allowed and
a warning is logged: orders keep flowing (the outbox holds their messages until Redis is back).
"""

import functools
import logging
import math
import time

import redis
from django.conf import settings
from django.http import HttpRequest

from core.errors import RateLimited

logger = logging.getLogger(__name__)

# A rate limiter that waits on Redis holds a web worker: give up fast and allow the request instead.
REDIS_TIMEOUT_SECONDS = 0.5


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.RATE_LIMIT_REDIS_URL,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )


def client_address(request: HttpRequest) -> str:
    """The client's IP address: the socket's peer, or the one the trusted proxies in front of us recorded."""
    proxies = settings.RATE_LIMIT_TRUSTED_PROXIES
    forwarded_for = [address.strip() for address in request.headers.get("X-Forwarded-For", "").split(",")]
    if proxies and forwarded_for[0]:
        # Each proxy appends the address it received the request from: the last `proxies` entries are theirs to
        # vouch for, anything before them was sent by the client and could be forged.
        return forwarded_for[-min(proxies, len(forwarded_for))]
    return request.META.get("REMOTE_ADDR", "")


def enforce_rate_limit(request: HttpRequest, *, scope: str) -> None:
    """Count one hit of `scope` for this request's client; raise RateLimited once it is over the limit.

    The limit is `settings.RATE_LIMITS[scope]`: (hits allowed, window in seconds).
    """
    limit, window_seconds = settings.RATE_LIMITS[scope]
    now = time.time()
    window = int(now // window_seconds)
    key = f"{settings.RATE_LIMIT_KEY_PREFIX}{scope}:{client_address(request)}:{window}"
    try:
        # MULTI/EXEC: the increment and the expiry are one step, so no counter outlives its window.
        pipeline = _redis().pipeline(transaction=True)
        pipeline.incr(key)
        pipeline.expire(key, window_seconds)
        hits, _ = pipeline.execute()
    except redis.RedisError as error:
        logger.warning("Rate limit %r not enforced, Redis is unavailable: %s", scope, error)
        return
    if hits > limit:
        retry_after = max(1, math.ceil((window + 1) * window_seconds - now))
        raise RateLimited(
            f"Too many requests from this client: at most {limit} every {window_seconds} seconds. "
            f"Try again in {retry_after} seconds.",
            retry_after=retry_after,
        )


def rate_limited(scope: str):
    """Decorate a view (or an API operation, through ninja's `decorate_view`) with `enforce_rate_limit`."""

    def decorator(view):
        @functools.wraps(view)
        def limited_view(request: HttpRequest, *args, **kwargs):
            enforce_rate_limit(request, scope=scope)
            return view(request, *args, **kwargs)

        return limited_view

    return decorator
