"""Brute force on the admin login (django-axes): failed logins are counted per account
and per address; at the limit the account, or the address, is locked, a correct
password included, with a clear 429 page, until the cool-off passes or an operator
unlocks it in the admin. And an operator session ends after inactivity."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from axes.models import AccessAttempt
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from iaas.operations.login_limits import client_address
from tests.admin.conftest import PASSWORD

LIMIT = 3
COOL_OFF = dt.timedelta(minutes=10)


@pytest.fixture(autouse=True)
def limits(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = COOL_OFF


def attempt(username: str, password: str, address: str = "198.51.100.7", client: Client | None = None):
    return (client or Client()).post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )


def logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_failures_lock_the_account_even_from_fresh_addresses(support):
    for n in range(LIMIT - 1):
        assert attempt("sam", f"guess-{n}", address=f"203.0.113.{n}").status_code == 200
    assert attempt("sam", "guess-last", address="203.0.113.9").status_code == 429  # the limit
    refused = attempt("sam", PASSWORD, address="192.0.2.99")
    assert refused.status_code == 429
    assert b"Too many failed logins" in refused.content
    assert refused["Retry-After"] == "600"
    assert not logged_in(attempt("sam", PASSWORD, address="192.0.2.100"))


def test_failures_lock_the_address_for_every_account(support, finance):
    for n in range(LIMIT - 1):
        assert attempt(f"nobody-{n}", "guess", address="203.0.113.50").status_code == 200
    assert attempt("nobody-last", "guess", address="203.0.113.50").status_code == 429
    assert attempt("sam", PASSWORD, address="203.0.113.50").status_code == 429
    assert attempt("fiona", PASSWORD, address="203.0.113.50").status_code == 429
    # The accounts themselves are not locked: from elsewhere they log in.
    assert logged_in(attempt("sam", PASSWORD, address="203.0.113.51"))


def test_below_the_limit_a_correct_password_logs_in_and_clears_the_count(support):
    for n in range(LIMIT - 1):
        attempt("sam", f"guess-{n}")
    assert logged_in(attempt("sam", PASSWORD))
    assert not AccessAttempt.objects.filter(username="sam").exists()


def test_the_lock_ends_after_the_cool_off(support):
    for n in range(LIMIT):
        attempt("sam", f"guess-{n}")
    assert attempt("sam", PASSWORD).status_code == 429
    with time_machine.travel(timezone.now() + COOL_OFF - dt.timedelta(minutes=1)):
        assert attempt("sam", PASSWORD).status_code == 429  # and the wait starts again
    with time_machine.travel(timezone.now() + 2 * COOL_OFF):
        assert logged_in(attempt("sam", PASSWORD))


def test_an_operator_unlocks_the_account_in_the_admin(support, as_role):
    for n in range(LIMIT):
        attempt("sam", f"guess-{n}")
    assert attempt("sam", PASSWORD).status_code == 429
    admin = as_role("superuser")
    changelist = reverse("admin:axes_accessattempt_changelist")
    listed = admin.get(changelist, {"q": "sam"})
    assert listed.status_code == 200
    assert b"sam" in listed.content
    locked = AccessAttempt.objects.filter(username="sam")
    response = admin.post(
        changelist, {"action": "delete_selected", "_selected_action": [a.pk for a in locked], "post": "yes"}
    )
    assert response.status_code == 302
    assert logged_in(attempt("sam", PASSWORD))


def test_support_cannot_unlock(support, as_role):
    client = as_role("support")
    assert client.get(reverse("admin:axes_accessattempt_changelist")).status_code == 403


def test_the_api_token_endpoint_is_not_counted(customer):
    # API credentials have their own throttles; the admin's lock never answers the API.
    client = Client()
    for _ in range(LIMIT + 1):
        response = client.post(
            "/api/v1/auth/token/",
            {"username": customer.username, "password": "wrong"},
            content_type="application/json",
        )
        assert response.status_code == 401
    assert not AccessAttempt.objects.exists()


def test_the_address_is_the_socket_unless_behind_trusted_proxies(rf, settings):
    request = rf.get("/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.1")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 0}
    assert client_address(request) == "10.0.0.5"  # a client cannot choose its address
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    assert client_address(request) == "198.51.100.1"  # what our one proxy saw


# --- Session expiry ---------------------------------------------------------------------


def test_an_idle_operator_session_expires(as_role, settings):
    assert settings.SESSION_COOKIE_AGE == 30 * 60
    client = as_role("finance")
    start = timezone.now()
    for minutes in (20, 40, 60):  # each visit within 30 minutes of the last renews it
        with time_machine.travel(start + dt.timedelta(minutes=minutes)):
            assert client.get("/admin/").status_code == 200
    with time_machine.travel(start + dt.timedelta(minutes=60 + 31)):
        response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
