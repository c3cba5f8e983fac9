"""Fixtures for the API tests: clients with and without a customer's API key."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.cache import clear_cache
from tests.factories import api_key_for

PROBLEM = "application/problem+json"


def client_for(user=None, *, scope: str = "read_write") -> APIClient:
    """A client sending a new API key of ``user`` (none when None)."""
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {api_key_for(user, scope=scope)}")
    return client


def assert_problem(response, status: int, code: str) -> dict:
    """The response is RFC 9457 problem details with this status and code."""
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:iaas:problem:{code}"
    assert body["title"]
    assert body["detail"]
    return body


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Throttle counters live in the cache: each test starts with none (only this run's
    keys are deleted: tests/cache.py)."""
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def anonymous():
    return APIClient()


@pytest.fixture
def api(customer):
    """The customer's authenticated client."""
    return client_for(customer)


@pytest.fixture
def other_api(other_customer):
    return client_for(other_customer)
