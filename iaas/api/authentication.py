"""How a request proves who it is: an API key in ``Authorization: Token <key>``.

- ``ApiKeyAuthentication``: REST framework's authentication class for every view that
  needs a customer (one SELECT; the last use at most once a minute, see ``keys``).
- ``KeyScope``: a ``read`` key may use the safe methods only; anything else is a 403
  ``permission_denied``.
- ``RejectBadCredentialsMiddleware``: views that authenticate nobody (the public
  catalogs, registration, token issue) would ignore the header, so a client with a
  wrong, revoked or expired key would learn nothing there. A request to such a view
  that carries credentials has them checked here: 401 ``not_authenticated`` unless
  they are a valid key (API.md, "Authentication"). Without credentials it passes.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions, permissions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from . import keys
from .models import ApiKey
from .problems import PROBLEM_CONTENT_TYPE, problem

KEYWORD = "Token"


def _presented_key(header: bytes) -> str | None:
    """The key in an ``Authorization`` header. None when there is no header or it is
    not ours (another scheme); AuthenticationFailed when it is ours but malformed."""
    parts = header.split()
    if not parts or parts[0].lower() != KEYWORD.lower().encode():
        return None
    if len(parts) != 2:
        raise exceptions.AuthenticationFailed("Send the key as `Authorization: Token <key>`.")
    try:
        return parts[1].decode()
    except UnicodeError:
        raise exceptions.AuthenticationFailed("The key contains invalid characters.") from None


def authenticate_key(key: str):
    """(user, api_key) for a valid key, recording its use; AuthenticationFailed otherwise."""
    try:
        api_key = keys.api_key_authenticate(key=key)
    except keys.KeyRejected as rejection:
        raise exceptions.AuthenticationFailed(rejection.reason) from None
    keys.api_key_touch(api_key=api_key)
    return api_key.owner, api_key


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Token <key>``; ``request.auth`` is the ApiKey."""

    def authenticate(self, request):
        key = _presented_key(get_authorization_header(request))
        if key is None:
            return None
        return authenticate_key(key)

    def authenticate_header(self, request) -> str:
        return KEYWORD


class KeyScope(permissions.BasePermission):
    """A ``read`` key may only read: every method but GET, HEAD and OPTIONS is refused."""

    message = "This API key may only read (its scope is `read`)."

    def has_permission(self, request, view) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        api_key = request.auth
        return not isinstance(api_key, ApiKey) or api_key.may_write()


def _is_unauthenticated_view(view_func) -> bool:
    view_class = getattr(view_func, "cls", None)
    if view_class is None:
        return False  # not a REST framework view (the admin, routing 404s)
    initkwargs = getattr(view_func, "initkwargs", {}) or {}
    return not initkwargs.get("authentication_classes", view_class.authentication_classes)


class RejectBadCredentialsMiddleware:
    """Checks the credentials a request carries to a view that authenticates nobody."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header.strip() or not _is_unauthenticated_view(view_func):
            return None
        try:
            key = _presented_key(header.encode("iso-8859-1", errors="replace"))
            if key is None:
                raise exceptions.AuthenticationFailed(
                    "Unsupported credentials: send an API key as `Authorization: Token <key>`."
                )
            authenticate_key(key)
        except exceptions.AuthenticationFailed as failure:
            response = JsonResponse(
                problem(401, "not_authenticated", str(failure.detail)),
                status=401,
                content_type=PROBLEM_CONTENT_TYPE,
            )
            response["WWW-Authenticate"] = KEYWORD
            return response
        return None
