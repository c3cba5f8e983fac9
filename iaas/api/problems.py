"""RFC 9457 problem details: the one place where every error of the API, DRF's own and
the contracts' domain errors alike, becomes ``application/problem+json`` with a stable
``code`` (API.md's table)."""

from __future__ import annotations

import logging
import math

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response

from iaas.common.db import is_retryable, run_after_rollback
from iaas.contracts.errors import DomainError

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:iaas:problem:"

# Seconds a client should wait before retrying a 503: a busy lock clears quickly, a
# database that is down takes longer.
RETRY_AFTER_BUSY = 1
RETRY_AFTER_UNAVAILABLE = 5

TITLES = {
    "validation_error": "Invalid request",
    "not_authenticated": "Not authenticated",
    "insufficient_funds": "Insufficient funds",
    "permission_denied": "Permission denied",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "not_acceptable": "Not acceptable",
    "currency_mismatch": "Currency mismatch",
    "wallet_exists": "Wallet exists",
    "username_taken": "Username taken",
    "wallet_not_active": "Wallet not active",
    "domain_taken": "Domain taken",
    "invalid_state": "Invalid state",
    "idempotency_request_in_progress": "Request in progress",
    "idempotency_key_reused": "Idempotency key reused",
    "request_too_large": "Request body too large",
    "unsupported_media_type": "Unsupported media type",
    "throttled": "Too many requests",
    "unsafe_url": "Unsafe URL",
    "invalid_signature": "Invalid signature",
    "payment_methods_unavailable": "Payment methods unavailable",
    "server_error": "Internal server error",
    "service_unavailable": "Service unavailable",
}

# The contracts' errors by code. A domain error whose code is not here is a 409: the
# request was well formed but the state of things refuses it.
DOMAIN_STATUS = {
    "insufficient_funds": status.HTTP_402_PAYMENT_REQUIRED,
    "not_found": status.HTTP_404_NOT_FOUND,
    "currency_mismatch": status.HTTP_409_CONFLICT,
    "wallet_exists": status.HTTP_409_CONFLICT,
    "wallet_not_active": status.HTTP_409_CONFLICT,
    "domain_taken": status.HTTP_409_CONFLICT,
    "invalid_state": status.HTTP_409_CONFLICT,
    "service_unavailable": status.HTTP_503_SERVICE_UNAVAILABLE,
}

# DRF's exceptions whose default code differs from ours.
API_EXCEPTION_CODES = {
    exceptions.ValidationError: "validation_error",
    exceptions.ParseError: "validation_error",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
}


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"
    default_detail = "The request body is larger than the API accepts."


class ProblemError(exceptions.APIException):
    """An API-level error with its own code (idempotency conflicts, for instance)."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail=detail or self.default_detail, code=self.default_code)


def problem(status_code: int, code: str, detail: str, *, errors: dict | None = None) -> dict:
    body = {
        "type": f"{TYPE_PREFIX}{code}",
        "title": TITLES.get(code, code.replace("_", " ").capitalize()),
        "status": status_code,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def problem_response(
    status_code: int, code: str, detail: str, *, errors: dict | None = None, headers: dict | None = None
) -> Response:
    return Response(
        problem(status_code, code, detail, errors=errors),
        status=status_code,
        headers=headers,
        content_type=PROBLEM_CONTENT_TYPE,
    )


def domain_status(error: DomainError) -> int:
    return DOMAIN_STATUS.get(error.code, status.HTTP_409_CONFLICT)


def flatten_errors(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail as ``{"field": ["message", ...]}`` (nested fields dotted)."""
    if isinstance(detail, dict):
        flat: dict[str, list[str]] = {}
        for name, value in detail.items():
            for key, messages in flatten_errors(value, f"{prefix}.{name}" if prefix else str(name)).items():
                flat.setdefault(key, []).extend(messages)
        return flat
    key = prefix or settings.REST_FRAMEWORK.get("NON_FIELD_ERRORS_KEY", "non_field_errors")
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return {key: [str(item) for item in detail]}
        flat = {}
        for index, item in enumerate(detail):
            for sub_key, messages in flatten_errors(item, f"{key}[{index}]").items():
                flat.setdefault(sub_key, []).extend(messages)
        return flat
    return {key: [str(detail)]}


def _validation_detail(errors: dict[str, list[str]]) -> str:
    """The first error, for a human: "amount: A JSON integer is required."."""
    field, messages = next(iter(errors.items()), ("", ["Invalid input."]))
    non_field = settings.REST_FRAMEWORK.get("NON_FIELD_ERRORS_KEY", "non_field_errors")
    return messages[0] if field in ("", non_field) else f"{field}: {messages[0]}"


def _api_exception_code(exc: exceptions.APIException) -> str:
    for exception_class in type(exc).__mro__:
        if exception_class in API_EXCEPTION_CODES:
            code = API_EXCEPTION_CODES[exception_class]
            if code == "not_authenticated" and exc.status_code == status.HTTP_403_FORBIDDEN:
                return "permission_denied"  # DRF coerces a 401 without a scheme to 403
            return code
    return getattr(exc, "default_code", None) or "error"


def response_for_exception(exc: Exception) -> Response | None:
    """The problem response for ``exc``, or None when it is not an error we answer."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge()

    if isinstance(exc, DomainError):
        status_code = domain_status(exc)
        headers = {"Retry-After": str(RETRY_AFTER_BUSY)} if status_code == 503 else None
        return problem_response(status_code, exc.code, exc.detail, headers=headers)

    if isinstance(exc, OperationalError | InterfaceError):
        busy = isinstance(exc, OperationalError) and is_retryable(exc)
        logger.warning("database %s: %s", "busy" if busy else "unavailable", exc)
        return problem_response(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "service_unavailable",
            "The service is busy; nothing was done. Retry shortly."
            if busy
            else "The service is temporarily unavailable; nothing was done. Retry shortly.",
            headers={"Retry-After": str(RETRY_AFTER_BUSY if busy else RETRY_AFTER_UNAVAILABLE)},
        )

    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(math.ceil(exc.wait))
        code = _api_exception_code(exc)
        if code == "validation_error":
            errors = flatten_errors(exc.detail)
            if isinstance(exc, exceptions.ParseError):
                detail = str(exc.detail)
                errors = {"body": [detail]}
            else:
                detail = _validation_detail(errors)
            return problem_response(exc.status_code, code, detail, errors=errors, headers=headers)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return problem_response(exc.status_code, code, str(detail), headers=headers)
    return None


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """REST framework's EXCEPTION_HANDLER: every error as problem details."""
    from rest_framework.views import set_rollback  # rest_framework.views loads the parser, which imports us

    if isinstance(exc, DomainError):
        # The refusal's follow-up work (a release request), if no transaction owner ran
        # it yet: a service called inside an outer transaction leaves it to its caller.
        run_after_rollback(exc)
    response = response_for_exception(exc)
    if response is None:
        if settings.DEBUG:
            return None  # Django's debug page
        logger.error("unhandled error in %s", context.get("view"), exc_info=exc)
        response = problem_response(
            status.HTTP_500_INTERNAL_SERVER_ERROR, "server_error", "An unexpected error occurred."
        )
    set_rollback()
    return response


# --- Errors outside REST framework's views (routing) ------------------------------------


def _plain_problem(status_code: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse(
        problem(status_code, code, detail), status=status_code, content_type=PROBLEM_CONTENT_TYPE
    )


@csrf_exempt  # token-authenticated API: a POST to a wrong path is a 404, not a CSRF 403
def api_not_found(request: HttpRequest, *args, **kwargs) -> JsonResponse:
    """Any path under /api/ that no route matches (a malformed id included)."""
    return _plain_problem(status.HTTP_404_NOT_FOUND, "not_found", "No such path.")


def server_error_problem(request: HttpRequest) -> JsonResponse:
    return _plain_problem(
        status.HTTP_500_INTERNAL_SERVER_ERROR, "server_error", "An unexpected error occurred."
    )


def server_error(request: HttpRequest):
    """handler500: problem details under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return server_error_problem(request)
    from django.views.defaults import server_error as django_server_error

    return django_server_error(request)
