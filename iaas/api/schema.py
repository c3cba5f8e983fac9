"""OpenAPI: the problem details component, the error responses of every operation (each
with the codes it can answer), the Idempotency-Key header, Retry-After and the API key
security scheme (optional on the public endpoints, where a bad key is still a 401)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter
from rest_framework import permissions, serializers

from .idempotency import HEADER, KEY_PATTERN, REPLAYED_HEADER
from .problems import PROBLEM_CONTENT_TYPE


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details."""

    type = serializers.CharField(help_text="A URI naming the kind of problem: `urn:iaas:problem:<code>`.")
    title = serializers.CharField(help_text="A short summary of the kind of problem.")
    status = serializers.IntegerField(help_text="The HTTP status code.")
    detail = serializers.CharField(help_text="What went wrong with this request, for a human.")
    code = serializers.CharField(help_text="A stable machine-readable code (see API.md's table).")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation errors only: field name to a list of messages.",
    )

    class Meta:
        ref_name = "Problem"


CODE_DESCRIPTIONS = {
    "validation_error": "malformed JSON, missing or wrong fields, bad values",
    "not_authenticated": "no API key, or one that does not authenticate (wrong, revoked, expired)",
    "insufficient_funds": "the wallet's available balance does not cover the price",
    "permission_denied": "not allowed (a `read` API key on a write)",
    "not_found": "no such object for this customer, or no such page",
    "currency_mismatch": "the plan's currency is not the wallet's",
    "wallet_exists": "the customer already has a wallet in that currency",
    "username_taken": "another customer has that username",
    "wallet_not_active": "the wallet is frozen or closed",
    "domain_taken": "another active subscription already has that domain",
    "invalid_state": "the object's state does not allow this",
    "idempotency_request_in_progress": "a request with this Idempotency-Key is still running",
    "idempotency_key_reused": "this Idempotency-Key was used with a different body",
    "request_too_large": "the body is larger than the limit",
    "unsupported_media_type": "the body is not JSON",
    "throttled": "too many requests from this customer or address; see Retry-After",
    "service_unavailable": "database or payment provider unreachable or busy; retry, same Idempotency-Key",
    "payment_methods_unavailable": "the configured payment provider does not save payment methods",
}

RETRY_AFTER = {
    "schema": {"type": "integer", "minimum": 0},
    "description": "Seconds to wait before retrying.",
}

IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    name=HEADER,
    location=OpenApiParameter.HEADER,
    required=False,
    type={
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": KEY_PATTERN.replace(r"\A", "^").replace(r"\Z", "$"),
    },
    description=(
        "Makes this POST safe to retry. The first response with status 2xx, 402, 404 or 409 is "
        "stored for 24 hours and replayed to a request with the same key and the same JSON body "
        "(with `Idempotent-Replayed: true`); the same key with another body is a 422 "
        "`idempotency_key_reused`; while the first request runs, a 409 "
        "`idempotency_request_in_progress`. A 400 or a 5xx is not stored. Scoped to the customer, "
        "method and path. A random UUID makes a good key."
    ),
)

REPLAYED_PARAMETER = OpenApiParameter(
    name=REPLAYED_HEADER,
    location=OpenApiParameter.HEADER,
    type={"type": "string", "enum": ["true"]},
    description="Present when this is a stored response replayed for a repeated Idempotency-Key.",
    response=True,
)


SECURITY_SCHEME = "tokenAuth"


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "iaas.api.authentication.ApiKeyAuthentication"
    name = SECURITY_SCHEME

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "An API key, sent as `Token <key>`. A `read` key may use GET only (any other "
                "method is a 403 `permission_denied`)."
            ),
        }


class ApiAutoSchema(AutoSchema):
    """Adds to each operation what the API's plumbing does to it. A view may declare the
    domain problems of its methods in ``problem_codes``: ``{"post": {402: [...]}}``."""

    def _is_idempotent(self) -> bool:
        handler = getattr(self.view, self.method.lower(), None)
        return bool(getattr(handler, "idempotent", False))

    def _is_authenticated(self) -> bool:
        if not self.view.get_authenticators():
            return False
        return not any(isinstance(p, permissions.AllowAny) for p in self.view.get_permissions())

    def get_auth(self):
        auths = super().get_auth()
        if not self.view.get_authenticators():
            # Public: no key needed, but one that is sent must authenticate.
            auths = [{SECURITY_SCHEME: []}, *[a for a in auths if a != {}], {}]
        return auths

    def _is_throttled(self) -> bool:
        return bool(self.view.get_throttles())

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        if self.method == "POST" and self._is_idempotent():
            parameters += [IDEMPOTENCY_KEY_PARAMETER, REPLAYED_PARAMETER]
        return parameters

    def problem_codes(self) -> dict[int, list[str]]:
        codes: dict[int, list[str]] = {}

        def add(status_code: int, *names: str) -> None:
            for name in names:
                if name not in codes.setdefault(status_code, []):
                    codes[status_code].append(name)

        has_body = self.method in ("POST", "PUT", "PATCH")
        if has_body:
            add(400, "validation_error")
            add(413, "request_too_large")
            add(415, "unsupported_media_type")
        if self.method == "GET" and self._is_list_view():
            add(400, "validation_error")  # filters
            add(404, "not_found")  # a page or cursor that does not exist
        if "{" in self.path:
            add(404, "not_found")
        # Every operation: without a key when it needs one, with a key that does not
        # authenticate everywhere (iaas.api.authentication).
        add(401, "not_authenticated")
        if self._is_authenticated() and self.method not in permissions.SAFE_METHODS:
            add(403, "permission_denied")  # a read key
        declared = getattr(self.view, "problem_codes", {}).get(self.method.lower(), {})
        for status_code, names in declared.items():
            add(status_code, *names)
        if self.method == "POST" and self._is_idempotent():
            add(400, "validation_error")  # a malformed key
            add(409, "idempotency_request_in_progress")
            add(422, "idempotency_key_reused")
        if self._is_throttled():
            add(429, "throttled")
        add(503, "service_unavailable")
        return dict(sorted(codes.items()))

    def _problem_response(self, status_code: int, names: list[str]) -> dict:
        component = self.resolve_serializer(ProblemSerializer, "response")
        schema = {
            "allOf": [
                component.ref,
                {"type": "object", "properties": {"code": {"type": "string", "enum": names}}},
            ]
        }
        response = {
            "description": "; ".join(f"`{name}`: {CODE_DESCRIPTIONS.get(name, name)}" for name in names),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": schema}},
        }
        if status_code in (429, 503):
            response["headers"] = {"Retry-After": {**RETRY_AFTER, "required": True}}
        if status_code == 401:
            response["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Token`"}
            }
        return response

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status_code, names in self.problem_codes().items():
            responses.setdefault(str(status_code), self._problem_response(status_code, names))
        return responses
