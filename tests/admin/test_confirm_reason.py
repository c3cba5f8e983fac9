"""``OperatorAdmin.confirm`` with a ``reason_label``: the confirmation page asks for a
reason (required, at most 255 characters), shows itself again with the error until one
is given, and the action reads it with ``confirmed_reason``. Shown on a test-only admin
whose action hands the reason to its service, as "Suspend (operator, with a reason)"
will."""

from __future__ import annotations

import uuid

import pytest
from django.contrib import admin
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.test import RequestFactory

from iaas.billing.models import Wallet
from iaas.common.admin import OperatorAdmin


class NoteAdmin(OperatorAdmin):
    """A test-only admin: its action records the reason the operator gave."""

    noted: list

    @admin.action(description="Note the selected wallets, with a reason")
    def note_wallets(self, request, queryset):
        if response := self.confirm(
            request, queryset, title="Note wallets", warning="Noted for good.", reason_label="Why?"
        ):
            return response
        reason = self.confirmed_reason(request)
        return self.run_service(request, queryset, lambda wallet: self.noted.append(reason), done="Noted")


@pytest.fixture
def note_admin():
    model_admin = NoteAdmin(Wallet, admin.site)
    model_admin.noted = []
    return model_admin


@pytest.fixture
def post(superuser):
    def make(**data):
        request = RequestFactory().post(
            "/admin/billing/wallet/", {"action": "note_wallets", "_selected_action": [], **data}
        )
        request.user = superuser
        request.session = SessionStore()
        request._messages = FallbackStorage(request)
        return request

    return make


def page(response) -> str:
    return response.render().content.decode()


def test_the_page_asks_for_a_reason(note_admin, post, books):
    token = uuid.uuid4()
    response = note_admin.note_wallets(post(operation_token=str(token)), Wallet.objects.all())
    content = page(response)
    assert "Why?" in content
    assert 'name="reason"' in content
    assert 'maxlength="255"' in content
    assert f'value="{token}"' in content
    assert note_admin.noted == []


@pytest.mark.parametrize(
    ("reason", "error"), [("", "Give a reason"), ("   ", "Give a reason"), ("x" * 256, "255")]
)
def test_no_reason_or_a_too_long_one_shows_the_page_again(note_admin, post, books, reason, error):
    request = post(confirmed="yes", reason=reason, operation_token=str(uuid.uuid4()))
    response = note_admin.note_wallets(request, Wallet.objects.all())
    content = page(response)
    assert error in content
    assert 'class="errornote"' in content
    assert note_admin.noted == []
    assert note_admin.confirmed_reason(request) == ""


def test_the_action_reads_the_reason_and_runs_once(note_admin, post, books):
    token = str(uuid.uuid4())
    request = post(confirmed="yes", reason="  Legal hold #12 ", operation_token=token)

    assert note_admin.note_wallets(request, Wallet.objects.all()) is None

    assert note_admin.confirmed_reason(request) == "Legal hold #12"
    assert note_admin.noted == ["Legal hold #12"]
    assert "Noted: " in " ".join(str(m) for m in get_messages(request))

    replay = post(confirmed="yes", reason="Legal hold #12", operation_token=token)
    note_admin.note_wallets(replay, Wallet.objects.all())
    assert note_admin.noted == ["Legal hold #12"]
    assert "Already done" in " ".join(str(m) for m in get_messages(replay))


def test_without_a_reason_label_no_reason_is_asked(note_admin, post, books):
    request = post(confirmed="yes", operation_token=str(uuid.uuid4()))
    assert note_admin.confirm(request, Wallet.objects.all(), title="t", warning="w") is None
    assert note_admin.confirmed_reason(request) == ""
