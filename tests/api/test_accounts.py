"""Registration, token issue (each a new API key), key authentication and their rate limits."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError

from iaas.api.keys import KEY_PREFIX, key_digest
from iaas.api.models import ApiKey
from iaas.contracts.events import CustomerRegistered
from iaas.contracts.models import OutboxMessage
from tests.api.conftest import assert_problem, client_for


def client_with(token: str):
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


pytestmark = pytest.mark.django_db

REGISTER = "/api/v1/auth/register/"
TOKEN = "/api/v1/auth/token/"
NEW = {"username": "ada", "email": "ada@example.com", "password": "analytical-engine-1843"}


def test_registration_answers_a_token_that_authenticates(anonymous):
    response = anonymous.post(REGISTER, NEW)
    assert response.status_code == 201
    token = response.json()["token"]
    user = get_user_model().objects.get(username="ada")
    assert user.email == "ada@example.com"
    assert user.check_password(NEW["password"])
    assert token.startswith(KEY_PREFIX)
    # Stored hashed, read_write, named after the call, never expiring.
    api_key = ApiKey.objects.get(owner=user)
    assert (api_key.key_hash, api_key.name, api_key.scope) == (
        key_digest(token),
        "registration",
        "read_write",
    )
    assert api_key.expires_at is None
    assert not ApiKey.objects.filter(key_hash=token).exists()

    anonymous.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anonymous.get("/api/v1/wallets/").status_code == 200


def test_registration_tells_who_registered_in_the_users_transaction(anonymous, published):
    assert anonymous.post(REGISTER, NEW).status_code == 201
    user = get_user_model().objects.get(username="ada")
    [told] = [e for e in published if isinstance(e, CustomerRegistered)]
    assert (told.owner_id, told.username, told.email) == (user.pk, "ada", "ada@example.com")
    [row] = OutboxMessage.objects.filter(event_type="CustomerRegistered").values("payload").distinct()
    assert row["payload"]["owner_id"] == user.pk


def test_a_refused_registration_tells_nobody(anonymous, customer, published):
    taken = NEW | {"username": customer.username}
    assert_problem(anonymous.post(REGISTER, taken), 409, "username_taken")
    assert_problem(anonymous.post(REGISTER, NEW | {"password": "123"}), 400, "validation_error")
    assert not [e for e in published if isinstance(e, CustomerRegistered)]
    assert not OutboxMessage.objects.filter(event_type="CustomerRegistered").exists()


def test_a_registration_that_loses_the_race_for_its_username_tells_nobody(anonymous, monkeypatch):
    """The unique constraint refuses the user a concurrent request registered first: its
    transaction rolls back with the event written in it."""
    from iaas.api import accounts

    original = accounts.keys.api_key_create

    def loses_the_race(**kwargs):
        original(**kwargs)
        raise IntegrityError("duplicate key value violates unique constraint")

    monkeypatch.setattr(accounts.keys, "api_key_create", loses_the_race)
    assert_problem(anonymous.post(REGISTER, NEW), 409, "username_taken")
    assert not get_user_model().objects.filter(username="ada").exists()
    assert not OutboxMessage.objects.filter(event_type="CustomerRegistered").exists()


def test_each_token_issue_is_a_new_read_write_key_named_after_the_login(anonymous):
    registered = anonymous.post(REGISTER, NEW).json()["token"]
    issued = []
    for _ in range(2):
        response = anonymous.post(TOKEN, {"username": "ada", "password": NEW["password"]})
        assert response.status_code == 200
        assert set(response.json()) == {"token"}
        issued.append(response.json()["token"])
    assert len({registered, *issued}) == 3
    logins = ApiKey.objects.filter(owner__username="ada", name__startswith="login ")
    assert sorted(k.key_hash for k in logins) == sorted(key_digest(t) for t in issued)
    assert {k.scope for k in logins} == {"read_write"}
    assert all(re.fullmatch(r"login \d{4}-\d\d-\d\d \d\d:\d\d UTC", k.name) for k in logins)
    # Every one of them authenticates.
    for token in (registered, *issued):
        assert client_with(token).get("/api/v1/wallets/").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**NEW, "username": ""}, "username"),
        ({**NEW, "username": "has space"}, "username"),
        ({**NEW, "username": "x" * 151}, "username"),
        ({**NEW, "username": 12345}, "username"),
        ({**NEW, "email": "not-an-email"}, "email"),
        ({**NEW, "password": "short"}, "password"),
        ({**NEW, "password": "12345678901"}, "password"),
        ({**NEW, "password": "password123"}, "password"),
        ({**NEW, "password": "ada@example.com"}, "password"),
        ({**NEW, "password": None}, "password"),
        ({"username": "ada", "email": "ada@example.com"}, "password"),
    ],
)
def test_registration_refuses_bad_input(anonymous, body, field):
    body = assert_problem(anonymous.post(REGISTER, body), 400, "validation_error")
    assert field in body["errors"]
    assert not get_user_model().objects.filter(username="ada").exists()


def test_a_taken_username_is_a_conflict_whatever_its_case(anonymous, customer):
    assert_problem(
        anonymous.post(REGISTER, {**NEW, "username": customer.username.upper()}), 409, "username_taken"
    )


def test_wrong_credentials_are_not_authenticated(anonymous, customer):
    for body in (
        {"username": customer.username, "password": "wrong-password"},
        {"username": "nobody", "password": "correct-horse-battery"},
    ):
        response = anonymous.post(TOKEN, body)
        assert_problem(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"].startswith("Token")


def test_token_issue_refuses_malformed_input(anonymous):
    assert_problem(anonymous.post(TOKEN, {"username": "ada"}), 400, "validation_error")
    assert_problem(anonymous.post(TOKEN, {"username": 1, "password": 2}), 400, "validation_error")


@pytest.mark.parametrize("header", [None, "Token not-a-token", "Bearer abc", "Token"])
def test_no_token_or_a_bad_token_is_401(header):
    client = client_for()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/wallets/")
    assert_problem(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("path", ["/api/v1/cloud/plans/", "/api/v1/hosting/plans/"])
def test_the_catalogs_are_public_but_refuse_credentials_that_do_not_authenticate(path, customer):
    assert client_for().get(path).status_code == 200
    assert client_for(customer).get(path).status_code == 200
    for header in ("Token not-a-token", "Token", "Bearer abc", "Token a b"):
        client = client_for()
        client.credentials(HTTP_AUTHORIZATION=header)
        response = client.get(path)
        assert_problem(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(("path", "scope"), [(REGISTER, "register"), (TOKEN, "token")])
def test_registration_and_token_issue_are_throttled_per_address(anonymous, settings, path, scope):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"register": "2/minute", "token": "2/minute"},
    }
    for _ in range(2):
        assert anonymous.post(path, {}, REMOTE_ADDR="203.0.113.7").status_code == 400
    response = anonymous.post(path, {}, REMOTE_ADDR="203.0.113.7")
    assert_problem(response, 429, "throttled")
    assert int(response["Retry-After"]) > 0
    # Another address is counted apart, and a forged X-Forwarded-For does not help.
    assert anonymous.post(path, {}, REMOTE_ADDR="203.0.113.8").status_code == 400
    forged = anonymous.post(path, {}, REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert forged.status_code == 429
