"""Every error under /api/ is problem+json with its code; bad input is never a 500;
a database that is down or busy is a 503 with Retry-After."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import OperationalError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.test import APIClient

from iaas.api.problems import exception_handler, flatten_errors
from iaas.contracts.errors import AdjustmentRefused, InvalidState, ServiceBusy
from tests.api.conftest import PROBLEM, assert_problem

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/no-such-thing/"),
        ("post", "/api/v1/no-such-thing/"),
        ("get", "/api/v1/wallets/not-a-uuid/"),
        ("get", "/api/v1/cloud/servers/123/"),
        ("delete", "/api/v1/hosting/subscriptions/not-a-uuid/"),
        ("get", "/api/v2/wallets/"),
        ("get", "/api/v1/wallets"),
    ],
)
def test_routing_404s_under_api_are_problems(api, method, path):
    assert_problem(getattr(api, method)(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/v1/wallets/"),
        ("delete", "/api/v1/wallets/"),
        ("patch", "/api/v1/cloud/servers/"),
        ("get", "/api/v1/auth/token/"),
        ("post", "/api/v1/cloud/plans/"),
    ],
)
def test_a_method_the_path_does_not_have_is_405(api, method, path):
    response = getattr(api, method)(path)
    assert_problem(response, 405, "method_not_allowed")
    assert method.upper() not in response["Allow"]


def test_malformed_json_is_a_400(api):
    response = api.generic("POST", "/api/v1/wallets/", '{"currency": ', content_type="application/json")
    body = assert_problem(response, 400, "validation_error")
    assert "body" in body["errors"]


@pytest.mark.parametrize(
    "payload", ['{"currency": NaN}', '{"amount": Infinity}', b"\xff\xfe{}", "[" * 50_000]
)
def test_json_that_python_would_take_but_is_not_json_is_a_400(api, payload):
    response = api.generic("POST", "/api/v1/wallets/", payload, content_type="application/json")
    assert_problem(response, 400, "validation_error")


@pytest.mark.parametrize("payload", ["[]", '"EUR"', "3", "null"])
def test_a_body_that_is_not_an_object_is_a_400(api, payload):
    response = api.generic("POST", "/api/v1/wallets/", payload, content_type="application/json")
    assert_problem(response, 400, "validation_error")


def test_a_body_that_is_not_json_is_415(api):
    response = api.generic(
        "POST", "/api/v1/wallets/", "currency=EUR", content_type="application/x-www-form-urlencoded"
    )
    assert_problem(response, 415, "unsupported_media_type")


def test_a_body_over_the_limit_is_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    payload = json.dumps({"currency": "EUR", "padding": "x" * 2000})
    response = api.generic("POST", "/api/v1/wallets/", payload, content_type="application/json")
    assert_problem(response, 413, "request_too_large")


def test_a_body_over_the_limit_without_content_length_is_413(settings, customer):
    """A body that lies about its length is cut at the limit, not read whole."""
    from iaas.api.parsers import StrictJSONParser
    from iaas.api.problems import RequestTooLarge

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 16
    stream = mock.Mock()
    stream.read.side_effect = lambda size=-1: b'{"a": "' + b"x" * 100 + b'"}'
    with pytest.raises(RequestTooLarge):
        StrictJSONParser().parse(stream, parser_context={})
    stream.read.assert_called_once_with(17)


def test_a_database_that_is_down_is_503_with_retry_after(api):
    with mock.patch(
        "iaas.billing.selectors.Wallet.objects.filter", side_effect=OperationalError("connection refused")
    ):
        response = api.get("/api/v1/wallets/")
    body = assert_problem(response, 503, "service_unavailable")
    assert "nothing was done" in body["detail"]
    assert int(response["Retry-After"]) > 0


def test_a_lock_not_had_after_retries_is_503_with_retry_after(api, wallet, catalog):
    with mock.patch("iaas.cloud.api.views.ServerListCreateView.create", side_effect=ServiceBusy()):
        response = api.post(
            "/api/v1/cloud/servers/", {"name": "web", "plan": "s-1vcpu-1gb", "wallet": str(wallet.id)}
        )
    assert_problem(response, 503, "service_unavailable")
    assert response["Retry-After"] == "1"


def test_an_unexpected_error_is_a_500_problem_not_a_page(customer, wallet):
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(customer)
    with mock.patch("iaas.billing.api.views.services.wallet_create", side_effect=RuntimeError("bug")):
        response = client.post("/api/v1/wallets/", {"currency": "USD"}, format="json")
    assert_problem(response, 500, "server_error")
    assert "bug" not in response.content.decode()


def test_validation_errors_name_each_field(api, wallet):
    response = api.post("/api/v1/cloud/servers/", {"name": "-bad-", "wallet": "nope"})
    body = assert_problem(response, 400, "validation_error")
    assert set(body["errors"]) == {"name", "plan", "wallet"}
    assert all(isinstance(message, str) for messages in body["errors"].values() for message in messages)


def test_nested_errors_are_flattened_with_dotted_names():
    assert flatten_errors({"a": {"b": ["x"]}, "c": ["y", "z"]}) == {"a.b": ["x"], "c": ["y", "z"]}
    assert flatten_errors(["x"]) == {"non_field_errors": ["x"]}
    assert flatten_errors({"items": [{"n": ["x"]}, {}]}) == {"items[0].n": ["x"]}


def test_problem_content_type_on_every_error(api):
    assert api.get("/api/v1/nope")["Content-Type"] == PROBLEM


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (exceptions.PermissionDenied(), 403, "permission_denied"),
        (DjangoPermissionDenied(), 403, "permission_denied"),
        (Http404("No Wallet matches the given query."), 404, "not_found"),
        (InvalidState(), 409, "invalid_state"),
        (AdjustmentRefused(), 409, "adjustment_refused"),
    ],
)
def test_every_kind_of_error_maps_to_its_problem(error, status, code):
    response = exception_handler(error, {})
    assert response.status_code == status
    assert response.content_type == PROBLEM
    assert response.data["code"] == code
    assert "Wallet" not in response.data["detail"]  # a 404 names no model
