"""The JSON API's boundary: the request bodies it refuses to read, and the one shape of every error it answers.

Errors reach an API client from several places: a service raising an `ApplicationError`, django-ninja rejecting
the input, Django finding no URL (404) or django-ninja no operation for the method (405), an unexpected exception
(500), and this middleware refusing a body (413, 415). All of them leave through `error_response` as
`{"error": {"code", "message", "fields"?, "details"?}}` (the `ErrorOut` schema below documents it in OpenAPI):
the API hands every exception over instead of rendering it (`proj.api`), and Django's own error pages under
/api/ are replaced by the same shape.
"""

from django.conf import settings
from django.core import exceptions as django_errors
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import Field, Schema
from ninja.errors import HttpError as NinjaHttpError
from ninja.errors import ValidationError as NinjaValidationError

from core.errors import (
    ApplicationError,
    BadRequest,
    InvalidInput,
    MalformedJson,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    UnsupportedMediaType,
    error_for_status,
)

API_PATH_PREFIX = "/api/"  # where proj/urls.py mounts the API
JSON_MEDIA_TYPES = ("application/json",)


class Error(Schema):
    code: str = Field(description="Stable, machine-readable: `unknown_product`, `order_not_cancellable`, ...")
    message: str = Field(description="For people: what went wrong and what to do.")
    fields: dict[str, str] | None = Field(
        None, description='Problems with given fields, by field: `{"items[0].sku": "Unknown product."}`.'
    )
    details: dict[str, object] | None = Field(
        None, description="Facts to act on, e.g. the order's current `status` when it cannot be cancelled."
    )


class ErrorOut(Schema):
    """What `error_response` renders, for the OpenAPI schema of every operation."""

    error: Error


def error_response(error: ApplicationError) -> JsonResponse:
    """The one rendering of an error: `{"error": {"code", "message", "fields"?, "details"?}}`, with its headers."""
    body: dict = {"code": error.code, "message": error.message}
    if error.fields:
        body["fields"] = error.fields
    if error.details:
        body["details"] = error.details
    response = JsonResponse({"error": body}, status=error.status)
    for name, value in error.extra_headers.items():
        response[name] = value
    return response


class ApiErrorMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(API_PATH_PREFIX):
            return self.get_response(request)
        refusal = unreadable_body_error(request)
        if refusal is not None:
            return error_response(refusal)
        response = self.get_response(request)
        if response.status_code >= 400 and not _is_json(response.get("Content-Type", "")):
            return _replace_error_page(response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path_info.startswith(API_PATH_PREFIX):
            return None
        error = as_application_error(exception)
        # None lets Django log the exception and answer 500, whose page __call__ then replaces.
        return error_response(error) if error is not None else None


def unreadable_body_error(request: HttpRequest) -> ApplicationError | None:
    """Why the request's body must not be read at all, if it must not: too large, not JSON, unknown length."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return BadRequest("The Content-Length header is not a number.")
    if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        return _body_too_large()
    if length > 0 and not _is_json(request.content_type or ""):
        return UnsupportedMediaType("Send the request body as JSON, with the header Content-Type: application/json.")
    return None


def as_application_error(exception: Exception) -> ApplicationError | None:
    """The ApplicationError an exception means to an API client; None for a bug (a 500)."""
    match exception:
        case ApplicationError():
            return exception
        case NinjaValidationError():
            return InvalidInput("The request is invalid.", fields=_fields_of(exception.errors))
        case NinjaHttpError(status_code=400):
            # django-ninja raises it for one thing only: a body that does not parse as JSON.
            reason = f": {exception.__cause__}" if exception.__cause__ else ""
            return MalformedJson(f"The request body is not valid JSON{reason}.")
        case NinjaHttpError():
            return error_for_status(exception.status_code, exception.message)
        case Http404():
            return NotFound("Not found.")
        case django_errors.PermissionDenied():
            return PermissionDenied("Permission denied.")
        case django_errors.ValidationError() if hasattr(exception, "error_dict"):
            fields = {name: " ".join(messages) for name, messages in exception.message_dict.items()}
            return InvalidInput("The request is invalid.", fields=fields)
        case django_errors.ValidationError():
            return InvalidInput(" ".join(exception.messages))
        case django_errors.RequestDataTooBig():
            return _body_too_large()
        case django_errors.SuspiciousOperation() | django_errors.BadRequest():
            return BadRequest("Bad request.")
    return None


def _body_too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")


def _replace_error_page(page: HttpResponse) -> HttpResponse:
    """The same error as Django's HTML (or plain text) page, in the API's shape; Allow survives a 405."""
    if page.status_code == 404:
        error: ApplicationError = NotFound("No API endpoint at this URL.")
    elif page.status_code == 405:
        error = MethodNotAllowed(f"Method not allowed; this URL accepts {page.get('Allow', 'no method')}.")
    else:
        error = error_for_status(page.status_code)
    response = error_response(error)
    if "Allow" in page:
        response["Allow"] = page["Allow"]
    return response


def _fields_of(errors: list[dict]) -> dict[str, str]:
    """django-ninja's (pydantic's) errors as {field: message}, fields named as services name them: `items[0].sku`."""
    fields: dict[str, str] = {}
    for error in errors:
        source, *location = error["loc"]
        if source == "body":
            location = location[1:]  # the name of the view's body parameter, which the client never sees
        name = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".")
        fields.setdefault(name or source, error["msg"])
    return fields


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type in JSON_MEDIA_TYPES or media_type.endswith("+json")
