"""The throttles (iaas/api/throttles.py): every endpoint limited per customer when
authenticated and per address otherwise, counted by an atomic fixed-window counter in
the shared cache (Redis here, as in production; the database cache without REDIS_URL),
a 429 ``throttled`` with ``Retry-After`` = the time left in the window."""

from __future__ import annotations

import logging
import threading

import pytest
import redis
import time_machine
from django.conf import settings as django_settings
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext

from iaas.api import throttles
from tests.api.conftest import assert_problem, client_for
from tests.cache import redis_client

WALLETS = "/api/v1/wallets/"
PLANS = "/api/v1/cloud/plans/"  # open to anyone, without authentication


@pytest.fixture
def rates(settings):
    """Set some scopes' rates (the others keep theirs)."""

    def set_rates(**scopes):
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **scopes},
        }

    return set_rates


# --- The counter ----------------------------------------------------------------------


def test_the_counter_counts_in_redis_under_the_prefix_with_an_expiry():
    assert [throttles.hit("t:one", ttl=30) for _ in range(3)] == [1, 2, 3]
    client = redis_client()
    full_key = caches["default"].make_and_validate_key("t:one")
    assert full_key.startswith(django_settings.IAAS_CACHE_KEY_PREFIX + ":")
    assert int(client.get(full_key)) == 3
    assert 0 < client.ttl(full_key) <= 30
    assert caches["default"].get("t:one") == 3  # readable through the cache API too


def test_the_counter_is_one_round_trip_on_redis(monkeypatch):
    calls = {"commands": 0, "pipelines": 0}
    execute_command = redis.Redis.execute_command
    execute_pipeline = redis.client.Pipeline.execute

    def count_command(self, *args, **options):
        calls["commands"] += 1
        return execute_command(self, *args, **options)

    def count_pipeline(self, *args, **options):
        calls["pipelines"] += 1
        return execute_pipeline(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", count_command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", count_pipeline)
    throttles.hit("t:trip", ttl=30)
    throttles.hit("t:trip", ttl=30)
    assert calls == {"commands": 0, "pipelines": 2}


def test_concurrent_hits_are_each_counted_once():
    """What SimpleRateThrottle's read-then-write cannot do: 8 threads (8 connections)
    hitting one key together see every count from 1 to 200 exactly once."""
    seen: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        mine = [throttles.hit("t:race", ttl=30) for _ in range(25)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(1, 201))


def test_without_redis_the_database_cache_counts_in_the_migrated_table(db, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": django_settings.IAAS_CACHE_TABLE,
        }
    }
    assert [throttles.hit("t:db", ttl=30) for _ in range(3)] == [1, 2, 3]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {django_settings.IAAS_CACHE_TABLE}")
        assert cursor.fetchone() == (1,)


# --- Per customer, per address, on every endpoint ----------------------------------------


def test_an_authenticated_customer_is_limited_on_every_endpoint(customer, other_customer, rates):
    rates(user="3/minute")
    api = client_for(customer)
    paths = (WALLETS, "/api/v1/cloud/servers/", "/api/v1/hosting/subscriptions/")
    statuses = [api.get(path).status_code for path in paths]
    assert statuses == [200, 200, 200]
    response = api.get("/api/v1/cloud/servers/")
    assert_problem(response, 429, "throttled")
    assert 1 <= int(response["Retry-After"]) <= 60
    # The count is the customer's, whatever address the request comes from...
    assert api.get(WALLETS, REMOTE_ADDR="198.51.100.9").status_code == 429
    # ...and another customer has a count of their own.
    assert client_for(other_customer).get(WALLETS).status_code == 200


def test_anonymous_requests_are_limited_per_address(anonymous, customer, rates):
    rates(anon="2/minute", user="100/minute")
    for _ in range(2):
        assert anonymous.get(PLANS, REMOTE_ADDR="203.0.113.5").status_code == 200
    response = anonymous.get(PLANS, REMOTE_ADDR="203.0.113.5")
    assert_problem(response, 429, "throttled")
    assert int(response["Retry-After"]) >= 1
    assert anonymous.get(PLANS, REMOTE_ADDR="203.0.113.6").status_code == 200
    # A forged X-Forwarded-For (no proxy configured) does not buy a new count.
    forged = anonymous.get(PLANS, REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="192.0.2.1")
    assert forged.status_code == 429
    # A customer behind that address is counted as the customer, not as the address.
    assert client_for(customer).get(WALLETS, REMOTE_ADDR="203.0.113.5").status_code == 200


def test_retry_after_is_the_time_left_in_the_window_and_the_next_window_starts_afresh(customer, rates):
    rates(user="2/minute")
    api = client_for(customer)
    with time_machine.travel(1_900_000_040.0, tick=False):  # 20 s into a minute (epoch-aligned)
        assert [api.get(WALLETS).status_code for _ in range(2)] == [200, 200]
        response = api.get(WALLETS)
        assert response.status_code == 429
        assert response["Retry-After"] == "40"
    with time_machine.travel(1_900_000_081.0, tick=False):  # the next minute
        assert api.get(WALLETS).status_code == 200


def test_an_empty_rate_turns_a_scope_off(customer, rates):
    rates(user=None)
    api = client_for(customer)
    assert all(api.get(WALLETS).status_code == 200 for _ in range(5))


def test_an_unreachable_redis_lets_requests_through_logged(customer, settings, rates, caplog):
    rates(user="1/minute")
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    api = client_for(customer)
    with caplog.at_level(logging.WARNING, logger="iaas.api.throttles"):
        assert [api.get(WALLETS).status_code for _ in range(2)] == [200, 200]
    assert "cache unreachable" in caplog.text


def test_the_throttle_adds_no_sql_statement_to_an_authenticated_get(customer, rates):
    """On Redis the count costs one Redis round trip and no database statement."""
    api = client_for(customer)
    api.get(WALLETS)  # warm up (the token row, the content types)

    def statements() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get(WALLETS).status_code == 200
        return len(captured.captured_queries)

    rates(user=None)
    unthrottled = statements()
    rates(user="100/minute")
    assert statements() == unthrottled


def test_the_default_limits_come_from_the_environment():
    rates = django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert set(rates) >= {"user", "anon", "register", "token"}
    assert django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] == [
        "iaas.api.throttles.CustomerThrottle",
        "iaas.api.throttles.AddressThrottle",
    ]


def test_on_the_database_cache_a_hit_is_one_transaction(db, settings):
    """The fallback's read-then-write runs in one transaction (what makes it exact on the
    embedded SQLite, where every transaction takes the write lock at BEGIN)."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": django_settings.IAAS_CACHE_TABLE,
        }
    }
    throttles.hit("t:tx", ttl=30)
    with CaptureQueriesContext(connection) as captured:
        assert throttles.hit("t:tx", ttl=30) == 2
    sql = [q["sql"] for q in captured.captured_queries]
    assert sql[0].startswith("SAVEPOINT")  # inside the test's transaction: a savepoint
    assert sql[-1].startswith("RELEASE SAVEPOINT")
    assert not any(q.startswith("INSERT") for q in sql)  # the window's key is found, not re-added
