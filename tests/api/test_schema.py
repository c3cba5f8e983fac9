"""The OpenAPI schema at /api/schema/ describes every endpoint of API.md, with its
bodies, its problem responses and codes, the Idempotency-Key header and the API key
security scheme; /api/docs/ renders it."""

from __future__ import annotations

import pytest
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db

OPERATIONS = {
    ("/api/v1/auth/register/", "post"),
    ("/api/v1/auth/token/", "post"),
    ("/api/v1/auth/keys/", "get"),
    ("/api/v1/auth/keys/", "post"),
    ("/api/v1/auth/keys/{id}/", "delete"),
    ("/api/v1/wallets/", "get"),
    ("/api/v1/wallets/", "post"),
    ("/api/v1/wallets/{id}/", "get"),
    ("/api/v1/wallets/{id}/", "patch"),
    ("/api/v1/wallets/{wallet_id}/ledger/", "get"),
    ("/api/v1/wallets/{wallet_id}/top-ups/", "get"),
    ("/api/v1/wallets/{wallet_id}/top-ups/", "post"),
    ("/api/v1/wallets/{wallet_id}/top-ups/{top_up_id}/", "get"),
    ("/api/v1/wallets/{wallet_id}/auto-top-up/", "get"),
    ("/api/v1/wallets/{wallet_id}/auto-top-up/", "put"),
    ("/api/v1/wallets/{wallet_id}/auto-top-up/", "delete"),
    ("/api/v1/payment-methods/", "get"),
    ("/api/v1/payment-methods/", "post"),
    ("/api/v1/payment-methods/{id}/", "get"),
    ("/api/v1/payment-methods/{id}/", "delete"),
    ("/api/v1/invoices/", "get"),
    ("/api/v1/invoices/{invoice_id}/", "get"),
    ("/api/v1/cloud/plans/", "get"),
    ("/api/v1/cloud/servers/", "get"),
    ("/api/v1/cloud/servers/", "post"),
    ("/api/v1/cloud/servers/{id}/", "get"),
    ("/api/v1/cloud/servers/{id}/", "delete"),
    ("/api/v1/hosting/plans/", "get"),
    ("/api/v1/hosting/subscriptions/", "get"),
    ("/api/v1/hosting/subscriptions/", "post"),
    ("/api/v1/hosting/subscriptions/{id}/", "get"),
    ("/api/v1/hosting/subscriptions/{id}/", "delete"),
    ("/api/v1/storage/plans/", "get"),
    ("/api/v1/storage/volumes/", "get"),
    ("/api/v1/storage/volumes/", "post"),
    ("/api/v1/storage/volumes/{id}/", "get"),
    ("/api/v1/storage/volumes/{id}/", "patch"),
    ("/api/v1/storage/volumes/{id}/", "delete"),
    ("/api/v1/webhooks/endpoints/", "get"),
    ("/api/v1/webhooks/endpoints/", "post"),
    ("/api/v1/webhooks/endpoints/{id}/", "get"),
    ("/api/v1/webhooks/endpoints/{id}/", "patch"),
    ("/api/v1/webhooks/endpoints/{id}/", "delete"),
    ("/api/v1/webhooks/endpoints/{id}/rotate-secret/", "post"),
    ("/api/v1/webhooks/deliveries/", "get"),
    ("/api/v1/webhooks/deliveries/{id}/redeliver/", "post"),
    ("/api/v1/notifications/email/", "get"),
    ("/api/v1/notifications/email/", "put"),
    ("/api/v1/notifications/email/verify/", "post"),
}
PUBLIC = {
    ("/api/v1/auth/register/", "post"),
    ("/api/v1/auth/token/", "post"),
    ("/api/v1/cloud/plans/", "get"),
    ("/api/v1/hosting/plans/", "get"),
    ("/api/v1/storage/plans/", "get"),
}


@pytest.fixture
def schema(anonymous, catalog):
    response = anonymous.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def operations(schema):
    return {(path, method): op for path, item in schema["paths"].items() for method, op in item.items()}


def problem_codes(operation, status):
    response = operation["responses"][str(status)]
    schema = response["content"]["application/problem+json"]["schema"]
    return schema["allOf"][1]["properties"]["code"]["enum"]


def test_the_schema_is_valid_openapi_and_has_exactly_the_endpoints(schema):
    validate_schema(schema)
    assert set(operations(schema)) == OPERATIONS


# The answer holds the new key or signing secret: replaying it would mean storing it in
# plain text.
NOT_IDEMPOTENT = {
    ("/api/v1/auth/keys/", "post"),
    ("/api/v1/webhooks/endpoints/", "post"),
    ("/api/v1/webhooks/endpoints/{id}/rotate-secret/", "post"),
}


def test_key_security_on_every_endpoint_optional_on_the_public_ones(schema):
    scheme = schema["components"]["securitySchemes"]["tokenAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert "Token <key>" in scheme["description"]
    for key, operation in operations(schema).items():
        if key in PUBLIC:
            # No key needed, but a key that is sent must authenticate.
            assert operation["security"] == [{"tokenAuth": []}, {}], key
        else:
            assert operation["security"] == [{"tokenAuth": []}], key
        assert problem_codes(operation, 401) == ["not_authenticated"], key
        assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]


def test_every_authenticated_write_may_be_refused_to_a_read_key(schema):
    for key, operation in operations(schema).items():
        if key[1] in ("post", "put", "patch", "delete") and key not in PUBLIC:
            assert problem_codes(operation, 403) == ["permission_denied"], key
        else:
            assert "403" not in operation["responses"], key


def test_every_authenticated_post_takes_an_idempotency_key(schema):
    for (path, method), operation in operations(schema).items():
        if method != "post" or (path, method) in PUBLIC | NOT_IDEMPOTENT:
            continue
        [header] = [p for p in operation["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key"
        assert not header.get("required", False)
        assert (header["schema"]["minLength"], header["schema"]["maxLength"]) == (1, 255)
        assert problem_codes(operation, 422) == ["idempotency_key_reused"]
        assert "idempotency_request_in_progress" in problem_codes(operation, 409)


def test_errors_are_problem_details_with_their_codes(schema):
    ops = operations(schema)
    problem = schema["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    assert "errors" in problem["properties"]

    buy_server = ops[("/api/v1/cloud/servers/", "post")]
    assert problem_codes(buy_server, 400) == ["validation_error"]
    assert problem_codes(buy_server, 402) == ["insufficient_funds"]
    assert problem_codes(buy_server, 404) == ["not_found"]
    assert set(problem_codes(buy_server, 409)) == {
        "currency_mismatch",
        "wallet_not_active",
        "idempotency_request_in_progress",
    }
    subscribe = ops[("/api/v1/hosting/subscriptions/", "post")]
    assert "domain_taken" in problem_codes(subscribe, 409)
    assert "wallet_exists" in problem_codes(ops[("/api/v1/wallets/", "post")], 409)
    assert problem_codes(ops[("/api/v1/auth/register/", "post")], 429) == ["throttled"]
    assert (
        ops[("/api/v1/auth/token/", "post")]["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    )
    for operation in ops.values():
        assert problem_codes(operation, 503) == ["service_unavailable"]
        assert "Retry-After" in operation["responses"]["503"]["headers"]


def test_bodies_are_described(schema):
    components = schema["components"]["schemas"]
    amount = components["TopUpCreateRequest"]["properties"]["amount"]
    assert (amount["type"], amount["minimum"], amount["maximum"]) == ("integer", 1, 100_000_000)
    assert components["CurrencyEnum"]["enum"] == ["EUR", "USD", "GBP"]
    assert "s-1vcpu-1gb" in components["ServerCreatePlanEnum"]["enum"]
    assert "web-starter" in components["SubscriptionCreatePlanEnum"]["enum"]
    assert components["ServerCreateRequest"]["properties"]["wallet"]["format"] == "uuid"
    assert set(components["Wallet"]["properties"]) == {
        "id",
        "currency",
        "status",
        "balance",
        "reserved",
        "available",
        "low_balance_threshold",
        "debt",
        "created_at",
    }
    threshold = components["PatchedWalletUpdateRequest"]["properties"]["low_balance_threshold"]
    assert (threshold["type"], threshold["minimum"], threshold["maximum"]) == ("integer", 0, 100_000_000)
    assert threshold["nullable"] is True
    ledger = operations(schema)[("/api/v1/wallets/{wallet_id}/ledger/", "get")]
    assert {p["name"] for p in ledger["parameters"]} >= {
        "cursor",
        "page_size",
        "kind",
        "transaction_date_after",
        "transaction_date_before",
    }
    top_ups = operations(schema)[("/api/v1/wallets/{wallet_id}/top-ups/", "get")]
    [status] = [p for p in top_ups["parameters"] if p["name"] == "status"]
    assert status["schema"]["enum"] == ["failed", "pending", "succeeded"]
    assert {p["name"] for p in top_ups["parameters"]} >= {"page", "page_size", "status"}
    top_up = components["TopUp"]
    assert set(top_up["properties"]) == {
        "id",
        "amount",
        "currency",
        "status",
        "wallet",
        "provider",
        "provider_reference",
        "origin",
        "payment_method",
        "failed_attempts",
        "failure_code",
        "failure_message",
        "debt_paid",
        "created_at",
        "completed_at",
    }
    assert top_up["properties"]["completed_at"]["nullable"] is True
    one = operations(schema)[("/api/v1/wallets/{wallet_id}/top-ups/{top_up_id}/", "get")]
    assert one["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TopUp"
    }
    assert {p["name"]: p["schema"].get("format") for p in one["parameters"] if p["in"] == "path"} == {
        "wallet_id": "uuid",
        "top_up_id": "uuid",
    }
    delete = operations(schema)[("/api/v1/cloud/servers/{id}/", "delete")]
    assert delete["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Server"
    }


def test_the_docs_render_the_schema(anonymous):
    response = anonymous.get("/api/docs/")
    assert response.status_code == 200
    assert b"/api/schema/" in response.content


def test_api_keys_are_described(schema):
    components = schema["components"]["schemas"]
    assert set(components["ApiKey"]["properties"]) == {
        "id",
        "name",
        "prefix",
        "scope",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    }
    assert set(components["IssuedApiKey"]["properties"]) == set(components["ApiKey"]["properties"]) | {"key"}
    request = components["ApiKeyCreateRequest"]
    assert set(request["required"]) == {"name", "scope"}
    assert components["ScopeEnum"]["enum"] == ["read", "read_write"]
    ops = operations(schema)
    create = ops[("/api/v1/auth/keys/", "post")]["responses"]["201"]["content"]["application/json"]
    assert create["schema"] == {"$ref": "#/components/schemas/IssuedApiKey"}
    assert not [p for p in ops[("/api/v1/auth/keys/", "post")].get("parameters", []) if p["in"] == "header"]


def test_servers_state_their_usage_this_month(schema):
    server = schema["components"]["schemas"]["Server"]
    assert "usage_this_month" in server["required"]
    field = server["properties"]["usage_this_month"]
    assert field["readOnly"] is True
    assert "current calendar month" in field["description"]
    (ref,) = field["allOf"]
    usage = schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
    assert sorted(usage["required"]) == ["amount", "hours"]
    assert {name: prop["type"] for name, prop in usage["properties"].items()} == {
        "hours": "integer",
        "amount": "integer",
    }
    assert "minor units" in usage["properties"]["amount"]["description"]
