"""`Idempotency-Key` for API operations that create something, with the semantics of Stripe and the IETF draft
(draft-ietf-httpapi-idempotency-key-header):

- the first successful response (status and body) is stored with a fingerprint of the request, and a retry with
  the same key and the same request gets that response again (`Idempotent-Replayed: true`) and changes nothing;
- the same key with a different request is refused with 422, a retry while the first is still running with 409;
- a request that failed stores nothing: it created nothing, and may be corrected and sent again with its key;
- keys are kept IDEMPOTENCY_KEY_TTL_SECONDS (24 hours), then pruned hourly by `prune_idempotency_keys`.

How: the operation runs in one transaction holding a PostgreSQL advisory lock on the key, and the response is
stored in that same transaction. So the order and its stored response commit together or not at all (a crash in
between leaves neither, and the retry runs afresh), and a concurrent request with the key fails to take the lock
and is answered 409 at once instead of waiting. The unique constraint on the key stands behind the lock.
"""

import functools
import hashlib
import re
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from jobs.pruning import delete_in_batches
from orders.exceptions import IdempotencyKeyInUse, IdempotencyKeyReused, InvalidIdempotencyKey
from orders.models import IdempotencyKey

HEADER = "Idempotency-Key"
# Visible ASCII, at most 255 characters (Stripe's limit), such as a UUID.
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
# Separates our advisory locks from any other use of PostgreSQL's advisory locks in this database.
LOCK_NAMESPACE = "orders.idempotency-key:"


def idempotent(run):
    """Decorate an API operation (through ninja's `decorate_view`) to honour the Idempotency-Key header.

    `run` is django-ninja's operation: it validates the input, calls the view and renders the response, and
    raises every error (proj.api hands them to core.api_errors), so a response returned here is a success.
    """

    @functools.wraps(run)
    def run_once(request: HttpRequest, **kwargs) -> HttpResponse:
        key = idempotency_key(request)
        if key is None:
            return run(request, **kwargs)
        fingerprint = request_fingerprint(request)
        with transaction.atomic():
            if not _lock(key):
                raise IdempotencyKeyInUse(
                    "A request with this Idempotency-Key is still in progress; retry once it has finished."
                )
            stored = _stored_response(key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise IdempotencyKeyReused(
                        "This Idempotency-Key was used for a different request; use a new key for a new request.",
                        fields={HEADER: "Already used for a different request."},
                    )
                return _replay(stored)
            response = run(request, **kwargs)
            IdempotencyKey.objects.create(
                key=key,
                fingerprint=fingerprint,
                response_status=response.status_code,
                response_body=response.content.decode(),
            )
        return response

    return run_once


def idempotency_key(request: HttpRequest) -> str | None:
    """The request's Idempotency-Key, None when it sent none; InvalidIdempotencyKey when it is malformed."""
    value = request.headers.get(HEADER)
    if value is None:
        return None
    value = value.strip()
    if len(value) > 2 and value[0] == value[-1] == '"':
        value = value[1:-1]  # the IETF draft sends the key as a structured-field string: "8e03978e-..."
    if not KEY_PATTERN.fullmatch(value):
        raise InvalidIdempotencyKey(
            "An Idempotency-Key is 1 to 255 visible ASCII characters, such as a UUID.",
            fields={HEADER: "Give 1 to 255 visible ASCII characters."},
        )
    return value


def request_fingerprint(request: HttpRequest) -> str:
    """What makes a retry the same request: method, path and the body's exact bytes."""
    digest = hashlib.sha256()
    for part in ((request.method or "").encode(), request.path.encode(), request.body):
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two requests hash the same parts
        digest.update(part)
    return digest.hexdigest()


def _lock(key: str) -> bool:
    """Take the key's advisory lock until this transaction ends; False when another transaction holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [LOCK_NAMESPACE + key])
        return cursor.fetchone()[0]


def _stored_response(key: str) -> IdempotencyKey | None:
    """The key's stored response; a key past its time to live is deleted, not replayed (pruning may lag)."""
    stored = IdempotencyKey.objects.filter(key=key).first()
    if stored is not None and stored.created_at <= timezone.now() - timedelta(
        seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS
    ):
        stored.delete()
        return None
    return stored


def _replay(stored: IdempotencyKey) -> HttpResponse:
    response = HttpResponse(
        stored.response_body, status=stored.response_status, content_type="application/json; charset=utf-8"
    )
    response["Idempotent-Replayed"] = "true"
    return response


def prune_idempotency_keys(*, older_than: timedelta | None = None) -> int:
    """Delete the keys older than `older_than` (default: their time to live, 24 hours); return how many."""
    if older_than is None:  # not `or`: timedelta(0), "every key", is falsy
        older_than = timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS)
    return delete_in_batches(IdempotencyKey.objects.filter(created_at__lte=timezone.now() - older_than))
