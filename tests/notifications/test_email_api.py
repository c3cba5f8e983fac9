"""The customer's email settings over HTTP: what GET shows, what PUT replaces (a new
address unverified, with a new link), sending the link again at most once a minute."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from io import StringIO

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from iaas.notifications import emails
from iaas.notifications.models import EmailSettings, OutgoingEmail
from tests.api.conftest import assert_problem, client_for

pytestmark = pytest.mark.django_db

URL = "/api/v1/notifications/email/"
VERIFY_URL = "/api/v1/notifications/email/verify/"
FIELDS = {
    "address",
    "verified",
    "verified_at",
    "verification_sent_at",
    "low_balance",
    "services",
    "payments",
    "invoices",
}
BODY = {
    "address": "alice@new.example",
    "low_balance": True,
    "services": False,
    "payments": True,
    "invoices": False,
}


def later(minutes: int = 2):
    return time_machine.travel(timezone.now() + dt.timedelta(minutes=minutes))


def test_the_settings_need_a_key(anonymous):
    assert_problem(anonymous.get(URL), 401, "not_authenticated")
    assert_problem(anonymous.put(URL, BODY), 401, "not_authenticated")
    assert_problem(anonymous.post(VERIFY_URL), 401, "not_authenticated")


def test_a_customer_sees_their_account_address_unverified(api, customer):
    response = api.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == FIELDS
    assert body == {
        "address": customer.email,
        "verified": False,
        "verified_at": None,
        "verification_sent_at": None,
        "low_balance": True,
        "services": True,
        "payments": True,
        "invoices": True,
    }


def test_each_customer_sees_their_own(api, other_api, customer, other_customer):
    assert api.get(URL).json()["address"] == customer.email
    assert other_api.get(URL).json()["address"] == other_customer.email


def test_put_replaces_the_preferences_and_keeps_a_verified_address(api, customer):
    row = emails.settings_for(customer.pk)
    row.verified_at = timezone.now()
    row.save()
    response = api.put(URL, {**BODY, "address": customer.email})
    assert response.status_code == 200
    body = response.json()
    assert (body["verified"], body["services"], body["invoices"], body["low_balance"]) == (
        True,
        False,
        False,
        True,
    )
    row.refresh_from_db()
    assert (row.services, row.invoices, row.payments) == (False, False, True)
    assert not OutgoingEmail.objects.exists()


def test_a_new_address_is_unverified_and_gets_a_link(api, customer):
    row = emails.settings_for(customer.pk)
    row.verified_at = timezone.now()
    row.save()
    body = api.put(URL, BODY).json()
    assert (body["address"], body["verified"], body["verified_at"]) == ("alice@new.example", False, None)
    assert body["verification_sent_at"] is not None
    email = OutgoingEmail.objects.get()
    assert (email.kind, email.to) == ("verify_email", "alice@new.example")


def test_the_address_changes_at_most_once_a_minute(api, customer):
    assert api.put(URL, BODY).status_code == 200
    response = api.put(URL, {**BODY, "address": "mallory@victim.example"})
    assert_problem(response, 429, "throttled")
    assert 0 < int(response["Retry-After"]) <= 60
    assert EmailSettings.objects.get(owner=customer).address == "alice@new.example"
    with later():
        assert api.put(URL, {**BODY, "address": "alice@newer.example"}).status_code == 200
    assert OutgoingEmail.objects.filter(kind="verify_email").count() == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"address": "not an address"}, "address"),
        ({"address": 42}, "address"),
        ({"services": "true"}, "services"),
        ({"payments": 1}, "payments"),
        ({"invoices": None}, "invoices"),
    ],
)
def test_bad_values_are_400(api, customer, change, field):
    body = assert_problem(api.put(URL, {**BODY, **change}), 400, "validation_error")
    assert field in body["errors"]
    assert emails.settings_for(customer.pk).address == customer.email


def test_put_needs_every_field(api):
    body = assert_problem(api.put(URL, {"address": "a@b.example"}), 400, "validation_error")
    assert set(body["errors"]) == {"low_balance", "services", "payments", "invoices"}


def test_a_read_key_cannot_change_them(customer):
    assert_problem(client_for(customer, scope="read").put(URL, BODY), 403, "permission_denied")


def test_the_link_is_sent_again_at_most_once_a_minute(api, customer):
    response = api.post(VERIFY_URL)
    assert response.status_code == 202
    assert response.json()["verification_sent_at"] is not None
    response = api.post(VERIFY_URL)
    assert_problem(response, 429, "throttled")
    assert "Retry-After" in response
    with later():
        assert api.post(VERIFY_URL).status_code == 202
    emails_sent = OutgoingEmail.objects.filter(owner=customer, kind="verify_email")
    assert [m.to for m in emails_sent] == [customer.email, customer.email]


def test_at_most_five_links_a_day_whatever_the_minutes_between_them(api, customer):
    start = timezone.now()
    for n in range(5):
        with time_machine.travel(start + dt.timedelta(minutes=2 * n), tick=False):
            assert api.post(VERIFY_URL).status_code == 202
    with time_machine.travel(start + dt.timedelta(hours=3), tick=False):
        response = api.post(VERIFY_URL)
        assert_problem(response, 429, "throttled")
        assert int(response["Retry-After"]) > 20 * 3600  # when the first of the five is a day old
    with time_machine.travel(start + dt.timedelta(days=1, seconds=1), tick=False):
        assert api.post(VERIFY_URL).status_code == 202
    assert OutgoingEmail.objects.filter(owner=customer, kind="verify_email").count() == 6


def test_emails_waiting_for_the_old_address_are_not_sent_to_it(api, customer):
    waiting = OutgoingEmail.objects.create(
        owner=customer,
        kind="low_balance",
        event_id=uuid.uuid4(),
        to=customer.email,
        subject="s",
        text="t",
        html="h",
    )
    assert api.put(URL, {**BODY, "address": "new@example.com"}, format="json").status_code == 200
    waiting.refresh_from_db()
    assert (waiting.status, waiting.last_error) == ("failed", "not sent: the address changed")


def test_a_verified_address_needs_no_link(api, customer):
    row = emails.settings_for(customer.pk)
    row.verified_at = timezone.now()
    row.save()
    assert_problem(api.post(VERIFY_URL), 409, "invalid_state")
    assert not OutgoingEmail.objects.exists()


def test_the_link_in_the_email_verifies_the_address(api, client, customer):
    api.put(URL, BODY)
    text = OutgoingEmail.objects.get().text
    token = text.split("/email/verify/")[1].split("/")[0]
    assert client.get(f"/email/verify/{token}/").status_code == 200
    body = api.get(URL).json()
    assert (body["address"], body["verified"]) == ("alice@new.example", True)


def test_customers_from_before_emails_are_asked_to_confirm_theirs_once(customer, other_customer):
    emails.settings_for(other_customer.pk)
    row = emails.settings_for(other_customer.pk)
    row.verified_at = timezone.now()
    row.save()
    nobody = get_user_model().objects.create_user("no-address", email="", password="x" * 12)
    out = StringIO()
    call_command("send_verification_links", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {"dry_run": False, "sent": 1, "skipped": 1}  # nobody has no address
    sent = OutgoingEmail.objects.filter(kind="verify_email")
    assert [(m.owner_id, m.to) for m in sent] == [(customer.pk, customer.email)]
    call_command("send_verification_links", stdout=StringIO())  # again at once: the cooldown holds
    assert sent.count() == 1
    assert not OutgoingEmail.objects.filter(owner=nobody).exists()
