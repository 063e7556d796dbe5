"""The JSON API's boundary: the request bodies it refuses to read, and the one shape of every error it answers.

Errors reach an API client from several places: a service raising an `ApplicationError`, django-ninja rejecting
the input, Django finding no URL (404) or django-ninja no operation for the method (405), an unexpected exception
(500), and this middleware refusing a body (413, 415). All of them leave through `error_response` as
`{"error": {"code", "message", "fields"?, "details"?}}`: the API hands every exception over instead of rendering
it (`proj.api`), and Django's own error pages under /api/ are replaced by the same shape.
"""

from http import HTTPStatus

from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja.errors import HttpError as NinjaHttpError
from ninja.errors import ValidationError as NinjaValidationError

from proj.errors import ApplicationError, InvalidInput, NotFound
from proj.ratelimit import RateLimited

API_PATH_PREFIX = "/api/"  # where proj/urls.py mounts the API
JSON_MEDIA_TYPES = ("application/json",)


class MalformedJson(ApplicationError):
    code = "malformed_json"
    status = 400


class PayloadTooLarge(ApplicationError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(ApplicationError):
    code = "unsupported_media_type"
    status = 415


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
        return ApplicationError("The Content-Length header is not a number.", code="bad_request")
    if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        return PayloadTooLarge(f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
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
            return ApplicationError(
                exception.message, code=_code_of(exception.status_code), status=exception.status_code
            )
        case Http404():
            return NotFound("Not found.")
        case PermissionDenied():
            return ApplicationError("Permission denied.", code="permission_denied", status=403)
        case DjangoValidationError() if hasattr(exception, "error_dict"):
            fields = {name: " ".join(messages) for name, messages in exception.message_dict.items()}
            return InvalidInput("The request is invalid.", fields=fields)
        case DjangoValidationError():
            return InvalidInput(" ".join(exception.messages))
        case RequestDataTooBig():
            return PayloadTooLarge(f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
        case SuspiciousOperation() | BadRequest():
            return ApplicationError("Bad request.", code="bad_request")
    return None


def error_response(error: ApplicationError) -> JsonResponse:
    """The one rendering of an error: `{"error": {"code", "message", "fields"?, "details"?}}`."""
    body: dict = {"code": error.code, "message": error.message}
    if error.fields:
        body["fields"] = error.fields
    if error.details:
        body["details"] = error.details
    response = JsonResponse({"error": body}, status=error.status)
    if isinstance(error, RateLimited):
        response["Retry-After"] = str(error.retry_after)
    return response


def _replace_error_page(page: HttpResponse) -> HttpResponse:
    """The same error as Django's HTML (or plain text) page, in the API's shape; Allow survives a 405."""
    status = page.status_code
    if status == 404:
        error = NotFound("No API endpoint at this URL.")
    elif status == 405:
        error = ApplicationError(
            f"Method not allowed; this URL accepts {page.get('Allow', 'no method')}.",
            code="method_not_allowed",
            status=405,
        )
    else:
        error = ApplicationError(HTTPStatus(status).phrase + ".", code=_code_of(status), status=status)
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


def _code_of(status: int) -> str:
    return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type in JSON_MEDIA_TYPES or media_type.endswith("+json")
