"""API keys: the services (made, found, used, revoked) and the customer's endpoints
(`/api/v1/auth/keys/`), the statements an authenticated request costs, and the carrying
over of REST framework's plain-text tokens."""

from __future__ import annotations

import datetime as dt
import importlib
import secrets

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from iaas.api import keys
from iaas.api.models import ApiKey
from tests.api.conftest import assert_problem, client_for
from tests.factories import api_key_for

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/auth/keys/"


def client_with(key: str):
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


# --- Services -------------------------------------------------------------------------------


def test_a_key_is_shown_once_and_stored_only_as_its_digest(customer):
    issued = keys.api_key_create(owner_id=customer.pk, name="ci", scope="read")
    assert issued.key.startswith("iaas_live_")
    assert len(issued.key) == len("iaas_live_") + 43
    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    assert stored.key_hash == keys.key_digest(issued.key) != issued.key
    assert stored.prefix == issued.key[: len("iaas_live_") + 6]
    assert (stored.name, stored.scope, stored.expires_at, stored.last_used_at) == ("ci", "read", None, None)
    # The key appears in no column of the row.
    row = ApiKey.objects.filter(pk=stored.pk).values().get()
    assert not any(issued.key in str(value) for value in row.values())


def test_keys_are_unguessable_and_distinct(customer):
    made = {keys.api_key_create(owner_id=customer.pk, name=str(n)).key for n in range(20)}
    assert len(made) == 20


def test_a_key_authenticates_until_revoked_or_expired(customer):
    issued = keys.api_key_create(owner_id=customer.pk, name="ci")
    assert keys.api_key_authenticate(key=issued.key) == issued.api_key
    with pytest.raises(keys.KeyRejected, match="Invalid"):
        keys.api_key_authenticate(key=issued.key + "x")

    later = timezone.now() + dt.timedelta(hours=1)
    expiring = keys.api_key_create(owner_id=customer.pk, name="short", expires_at=later)
    assert keys.api_key_authenticate(key=expiring.key, now=later - dt.timedelta(seconds=1))
    with pytest.raises(keys.KeyRejected, match="expired"):
        keys.api_key_authenticate(key=expiring.key, now=later)

    keys.api_key_revoke(owner_id=customer.pk, key_id=issued.api_key.pk)
    with pytest.raises(keys.KeyRejected, match="revoked"):
        keys.api_key_authenticate(key=issued.key)


def test_a_disabled_customers_keys_do_not_authenticate(customer):
    issued = keys.api_key_create(owner_id=customer.pk, name="ci")
    customer.is_active = False
    customer.save(update_fields=["is_active"])
    with pytest.raises(keys.KeyRejected):
        keys.api_key_authenticate(key=issued.key)


def test_revoking_another_customers_key_finds_nothing(customer, other_customer):
    issued = keys.api_key_create(owner_id=other_customer.pk, name="theirs")
    with pytest.raises(ApiKey.DoesNotExist):
        keys.api_key_revoke(owner_id=customer.pk, key_id=issued.api_key.pk)
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is None


def test_revoking_twice_keeps_the_first_time(customer):
    issued = keys.api_key_create(owner_id=customer.pk, name="ci")
    first = keys.api_key_revoke(owner_id=customer.pk, key_id=issued.api_key.pk).revoked_at
    assert keys.api_key_revoke(owner_id=customer.pk, key_id=issued.api_key.pk).revoked_at == first


def test_the_last_use_is_written_at_most_once_a_minute(customer):
    issued = keys.api_key_create(owner_id=customer.pk, name="ci")
    api_key = issued.api_key
    start = timezone.now()
    assert keys.api_key_touch(api_key=api_key, now=start) is True
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == start
    # Within the minute: no statement at all.
    with CaptureQueriesContext(connection) as queries:
        assert keys.api_key_touch(api_key=api_key, now=start + dt.timedelta(seconds=59)) is False
    assert len(queries) == 0
    assert keys.api_key_touch(api_key=api_key, now=start + dt.timedelta(seconds=61)) is True
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == start + dt.timedelta(seconds=61)


def test_the_last_use_update_is_conditional(customer):
    """Two requests that both read a stale last use: the second UPDATE changes nothing
    (a concurrent request already wrote a newer time)."""
    issued = keys.api_key_create(owner_id=customer.pk, name="ci")
    now = timezone.now()
    stale_copy = ApiKey.objects.get(pk=issued.api_key.pk)
    keys.api_key_touch(api_key=issued.api_key, now=now)
    keys.api_key_touch(api_key=stale_copy, now=now - dt.timedelta(seconds=1))
    assert ApiKey.objects.get(pk=issued.api_key.pk).last_used_at == now


# --- Statements per authenticated request ---------------------------------------------------


def test_an_authenticated_get_costs_what_it_did_before_keys_but_once_a_minute(customer, wallet):
    """Before API keys (REST framework's token): GET /api/v1/wallets/{id}/ cost 2
    statements, the token with its user and the wallet. With keys: the same 2, and a 3rd,
    the conditional UPDATE of the last use, for one request a minute per key."""
    key = api_key_for(customer)
    client = client_with(key)
    path = f"/api/v1/wallets/{wallet.id}/"

    with CaptureQueriesContext(connection) as first:
        assert client.get(path).status_code == 200
    assert len(first) == 3
    assert first.captured_queries[1]["sql"].startswith('UPDATE "api_apikey"')

    with CaptureQueriesContext(connection) as steady:
        assert client.get(path).status_code == 200
    assert len(steady) == 2

    ApiKey.objects.filter(key_hash=keys.key_digest(key)).update(
        last_used_at=timezone.now() - keys.LAST_USED_RESOLUTION - dt.timedelta(seconds=1)
    )
    with CaptureQueriesContext(connection) as a_minute_later:
        assert client.get(path).status_code == 200
    assert len(a_minute_later) == 3


def test_using_a_key_records_its_last_use(api, customer):
    assert api.get("/api/v1/wallets/").status_code == 200
    [api_key] = ApiKey.objects.filter(owner=customer)
    assert timezone.now() - api_key.last_used_at < dt.timedelta(seconds=10)


# --- The endpoints ----------------------------------------------------------------------------


def test_making_listing_and_revoking_keys(api, customer):
    expires = (timezone.now() + dt.timedelta(days=30)).replace(microsecond=0)
    response = api.post(KEYS, {"name": "backups", "scope": "read", "expires_at": expires.isoformat()})
    assert response.status_code == 201
    made = response.json()
    assert set(made) == {
        "id",
        "name",
        "prefix",
        "scope",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "key",
    }
    assert (made["name"], made["scope"], made["revoked_at"], made["last_used_at"]) == (
        "backups",
        "read",
        None,
        None,
    )
    assert dt.datetime.fromisoformat(made["expires_at"]) == expires
    assert made["key"].startswith(made["prefix"])

    # The new key works, for reading; the list never shows a key.
    reader = client_with(made["key"])
    listed = reader.get(KEYS).json()["results"]
    assert made["id"] in [k["id"] for k in listed]
    assert all("key" not in k for k in listed)
    assert len(listed) == 2  # the fixture's key and this one

    revoked = api.delete(f"{KEYS}{made['id']}/")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert "key" not in revoked.json()
    # At once: the next request with it is a 401; it leaves the list.
    assert_problem(reader.get(KEYS), 401, "not_authenticated")
    assert made["id"] not in [k["id"] for k in api.get(KEYS).json()["results"]]


def test_a_key_may_revoke_itself(customer):
    key = api_key_for(customer)
    client = client_with(key)
    [own] = client.get(KEYS).json()["results"]
    assert client.delete(f"{KEYS}{own['id']}/").status_code == 200
    assert_problem(client.get(KEYS), 401, "not_authenticated")


def test_a_key_without_expiry_and_a_read_write_key(api):
    made = api.post(KEYS, {"name": "deploy", "scope": "read_write"}).json()
    assert made["expires_at"] is None
    assert client_with(made["key"]).post("/api/v1/wallets/", {"currency": "USD"}).status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "read"}, "name"),
        ({"name": "", "scope": "read"}, "name"),
        ({"name": "x" * 101, "scope": "read"}, "name"),
        ({"name": 7, "scope": "read"}, "name"),
        ({"name": "ci"}, "scope"),
        ({"name": "ci", "scope": "write"}, "scope"),
        ({"name": "ci", "scope": "READ"}, "scope"),
        ({"name": "ci", "scope": "read", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "ci", "scope": "read", "expires_at": "tomorrow"}, "expires_at"),
    ],
)
def test_bad_key_requests_are_refused_and_make_nothing(api, customer, body, field):
    before = ApiKey.objects.count()
    problem = assert_problem(api.post(KEYS, body), 400, "validation_error")
    assert field in problem["errors"]
    assert ApiKey.objects.count() == before


def test_a_read_key_may_not_make_or_revoke_keys(customer):
    reader = client_for(customer, scope="read")
    assert_problem(reader.post(KEYS, {"name": "escalate", "scope": "read_write"}), 403, "permission_denied")
    [own] = reader.get(KEYS).json()["results"]
    assert_problem(reader.delete(f"{KEYS}{own['id']}/"), 403, "permission_denied")
    assert ApiKey.objects.filter(owner=customer, revoked_at=None).count() == 1


def test_another_customers_key_is_not_found(api, other_customer):
    theirs = keys.api_key_create(owner_id=other_customer.pk, name="theirs").api_key
    assert_problem(api.delete(f"{KEYS}{theirs.pk}/"), 404, "not_found")
    assert_problem(api.delete(f"{KEYS}not-a-uuid/"), 404, "not_found")
    assert ApiKey.objects.get(pk=theirs.pk).revoked_at is None
    assert str(theirs.pk) not in [k["id"] for k in api.get(KEYS).json()["results"]]


# --- Carrying over REST framework's tokens --------------------------------------------------


def test_the_migration_carries_plain_text_tokens_over_hashed_and_drops_them(customer, other_customer):
    """A database from before keys has REST framework's ``authtoken_token`` (made here
    as that app made it): after the migration, each old token still authenticates as a
    read_write key, and no plain-text token is left."""
    old_tokens = {customer: secrets.token_hex(20), other_customer: secrets.token_hex(20)}
    with connection.cursor() as cursor:
        cursor.execute(
            'CREATE TABLE "authtoken_token" ("key" varchar(40) PRIMARY KEY, '
            '"created" timestamptz NOT NULL, "user_id" integer NOT NULL UNIQUE)'
        )
        for user, token in old_tokens.items():
            cursor.execute(
                "INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, now(), %s)", [token, user.pk]
            )
        cursor.execute(
            "INSERT INTO django_migrations (app, name, applied) VALUES ('authtoken', '0001_initial', now())"
        )
    migration = importlib.import_module("iaas.api.migrations.0003_carry_over_authtokens")
    with connection.schema_editor() as editor:
        migration.carry_over_authtokens(apps, editor)

    assert "authtoken_token" not in connection.introspection.table_names()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_migrations WHERE app = 'authtoken'")
        assert cursor.fetchone() == (0,)
    for user, token in old_tokens.items():
        api_key = ApiKey.objects.get(owner=user)
        assert (api_key.scope, api_key.name, api_key.prefix) == (
            "read_write",
            "token (carried over)",
            token[:6],
        )
        client = client_with(token)
        assert client.get("/api/v1/wallets/").status_code == 200
        assert client.post("/api/v1/wallets/", {"currency": "EUR"}).status_code == 201
    # And they can be listed and revoked like any key.
    client = client_with(old_tokens[customer])
    [carried] = client.get(KEYS).json()["results"]
    assert client.delete(f"{KEYS}{carried['id']}/").status_code == 200
    assert_problem(client.get("/api/v1/wallets/"), 401, "not_authenticated")


def test_the_migration_does_nothing_on_a_database_made_after_keys(customer):
    migration = importlib.import_module("iaas.api.migrations.0003_carry_over_authtokens")
    with connection.schema_editor() as editor:
        migration.carry_over_authtokens(apps, editor)
    assert not ApiKey.objects.exists()
