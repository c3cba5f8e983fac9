"""Customers' API keys in the operator console: listed and shown read-only, never their
secret nor its digest; revoked by an operator allowed to, at once."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.urls import reverse

from iaas.api import keys
from iaas.api.models import ApiKey
from tests.admin.conftest import make_operator
from tests.api.conftest import assert_problem, client_for

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:api_apikey_changelist")


@pytest.fixture
def issued(alice):
    return keys.api_key_create(owner_id=alice.pk, name="deploy from CI", scope="read")


def test_the_list_and_page_show_a_key_but_never_its_secret(as_role, issued):
    client = as_role("superuser")
    page = client.get(CHANGELIST).content.decode()
    for shown in ("deploy from CI", issued.api_key.prefix, "read", "alice"):
        assert shown in page
    change = client.get(reverse("admin:api_apikey_change", args=[issued.api_key.pk])).content.decode()
    for shown_page in (page, change):
        assert issued.key not in shown_page
        assert issued.api_key.key_hash not in shown_page
    assert "Revoke this key" in change
    for search in ("alice", "deploy", issued.api_key.prefix):
        assert client.get(CHANGELIST, {"q": search}).context["cl"].result_count == 1


def test_keys_are_read_only(as_role, issued):
    client = as_role("superuser")
    assert client.get(reverse("admin:api_apikey_add")).status_code == 403
    response = client.post(
        reverse("admin:api_apikey_change", args=[issued.api_key.pk]),
        {"name": "renamed", "scope": "read_write"},
    )
    assert response.status_code == 403
    assert ApiKey.objects.get(pk=issued.api_key.pk).name == "deploy from CI"


def test_revoking_from_the_console_stops_the_key_at_once(as_role, issued):
    response = as_role("superuser").post(
        CHANGELIST, {"action": "revoke_keys", "_selected_action": [issued.api_key.pk]}, follow=True
    )
    assert "Revoked 1 key(s)." in response.content.decode()
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is not None
    assert LogEntry.objects.filter(object_id=str(issued.api_key.pk)).exists()
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Token {issued.key}")
    assert_problem(client.get("/api/v1/wallets/"), 401, "not_authenticated")


def test_only_operators_allowed_to_revoke_may(as_role, issued, operator_groups):
    # Support sees no keys; an operator who may view keys but not revoke is refused.
    assert as_role("support").get(CHANGELIST).status_code == 403
    viewer = make_operator("vera")
    viewer.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    client = as_role("support")
    client.force_login(viewer)
    assert client.get(CHANGELIST).status_code == 200
    response = client.post(CHANGELIST, {"action": "revoke_keys", "_selected_action": [issued.api_key.pk]})
    assert response.status_code == 403
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is None
