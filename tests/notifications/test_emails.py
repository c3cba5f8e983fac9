"""Emails to customers: each kind says the facts of its event (text and HTML), only to a
verified address and only in the categories the customer keeps on, once per event; the
registration's verification link and what opening it does; sending through Django's
email backend; what a sending attempt's outcome does."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
import time_machine
from django.conf import settings
from django.core import mail, signing
from django.test import override_settings
from django.utils import timezone

from iaas.contracts import events as e
from iaas.notifications import catalog, emails, sender, verification
from iaas.notifications.models import EmailSettings, OutgoingEmail, WebhookEndpoint
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

EN_DASH = emails.EN_DASH
AT = dt.datetime(2026, 12, 3, 14, 0, tzinfo=dt.UTC)
WALLET = uuid.UUID("3f1c9a4e-8b2d-4c6e-9f10-5a7b3c2d1e0f")
SERVICE = uuid.UUID("9b2e4f6a-1c3d-4e5f-8a7b-6c5d4e3f2a10")


@pytest.fixture
def customer():
    return UserFactory(username="alice", email="alice@example.com")


@pytest.fixture
def verified(customer) -> EmailSettings:
    row = emails.settings_for(customer.pk)
    row.verified_at = timezone.now()
    row.save()
    return row


def queue(event: e.Event) -> list[OutgoingEmail]:
    """Apply ``event`` as the handler does: once per webhook type it is."""
    for event_type in catalog.types_of(event):
        emails.queue_for_event(event_type=event_type, event=event)
    return list(OutgoingEmail.objects.order_by("created_at"))


def only_email(event: e.Event) -> OutgoingEmail:
    queued = queue(event)
    assert len(queued) == 1, queued
    return queued[0]


def server(owner_id: int, **resource) -> dict:
    return {
        "id": str(SERVICE),
        "name": "web-1",
        "plan": "s-1vcpu-1gb",
        "wallet": str(WALLET),
        "status": "suspended",
        "suspension_causes": ["unpaid"],
        "terminates_at": "2026-12-06T14:00:00+00:00",
        **resource,
    }


def assert_says(email: OutgoingEmail, *facts: str) -> None:
    """Each fact in the subject or body of the text, and in the HTML."""
    for fact in facts:
        assert fact in email.subject + email.text, (fact, email.text)
        assert fact in email.html, (fact, email.html)
    assert "You get this email because" in email.text
    assert "You get this email because" in email.html
    assert "/api/v1/notifications/email/" in email.text


# --- Money and moments --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (1250, "EUR", "12.50 EUR"),
        (5, "USD", "0.05 USD"),
        (123456789, "GBP", "1,234,567.89 GBP"),
        (-1250, "EUR", "-12.50 EUR"),
        (1250, "JPY", "1,250 JPY"),
        (1250, "KWD", "1.250 KWD"),
    ],
)
def test_money_is_written_from_minor_units(amount, currency, shown):
    assert emails.format_money(amount, currency) == shown


def test_a_period_is_the_days_it_covers():
    assert (
        emails.format_period("2026-11-01T00:00:00+00:00", "2026-12-01T00:00:00+00:00")
        == f"1 {EN_DASH} 30 November 2026"
    )
    assert (
        emails.format_period(AT, AT + dt.timedelta(days=40)) == f"3 December 2026 {EN_DASH} 12 January 2027"
    )


# --- Each kind, its facts -----------------------------------------------------------------


def test_low_balance_says_the_balance_and_the_threshold(customer, verified):
    email = only_email(
        e.LowBalanceReached(
            wallet_id=WALLET, owner_id=customer.pk, currency="EUR", available=420, threshold=1000
        )
    )
    assert (email.kind, email.to) == ("low_balance", "alice@example.com")
    assert_says(email, "4.20 EUR", "10.00 EUR", str(WALLET), f"/api/v1/wallets/{WALLET}/top-ups/")
    assert "low_balance_threshold" in email.text


def test_a_suspension_for_unpaid_says_when_the_service_will_be_terminated(customer, verified):
    email = only_email(
        e.ServerSuspended(
            server_id=SERVICE,
            wallet_id=WALLET,
            reason="insufficient_funds",
            cause="unpaid",
            owner_id=customer.pk,
            resource=server(customer.pk),
        )
    )
    assert email.kind == "service_suspended"
    assert_says(email, "web-1", "its wallet could not pay for it", "terminated on 6 December 2026, 14:00 UTC")
    assert "insufficient_funds" not in email.text  # a code, not words


def test_a_subject_is_plain_text_and_the_html_escapes_the_same_words(customer, verified):
    # A subscription's domain cannot hold these, a volume's name neither; a plan's or an
    # operator's words might: the subject is a header, never HTML.
    email = only_email(
        e.ServerSuspended(
            server_id=SERVICE, wallet_id=WALLET, reason="unpaid", cause="unpaid", owner_id=customer.pk,
            resource=server(customer.pk, name="bob's <web> & db"),
        )
    )  # fmt: skip
    assert email.subject == "Your server bob's <web> & db is suspended"
    assert "bob&#x27;s &lt;web&gt; &amp; db" in email.html
    assert "<web>" not in email.html


def test_an_operator_hold_says_no_clock_runs_and_gives_the_reason(customer, verified):
    email = only_email(
        e.SubscriptionSuspended(
            subscription_id=SERVICE,
            wallet_id=WALLET,
            reason="Abuse report #4471",
            cause="operator",
            owner_id=customer.pk,
            resource={"domain": "shop.example.org", "suspension_causes": ["operator"], "cancels_at": None},
        )
    )
    assert_says(
        email, "hosting subscription shop.example.org", "our staff put it on hold", "Abuse report #4471"
    )
    assert "will not be cancelled" in email.text
    assert "<strong>not</strong> be cancelled" in email.html


def test_a_frozen_wallet_says_no_clock_runs(customer, verified):
    email = only_email(
        e.VolumeSuspended(
            volume_id=SERVICE,
            wallet_id=WALLET,
            reason="wallet_not_active",
            cause="wallet_blocked",
            owner_id=customer.pk,
            resource={"name": "db-data", "suspension_causes": ["wallet_blocked"], "terminates_at": None},
        )
    )
    assert_says(email, "volume db-data", "its wallet is frozen or closed")
    assert "no clock runs: it will not be deleted" in email.text


def test_several_causes_are_each_said(customer, verified):
    email = only_email(
        e.ServerSuspended(
            server_id=SERVICE,
            wallet_id=WALLET,
            reason="hold",
            cause="operator",
            owner_id=customer.pk,
            resource=server(customer.pk, suspension_causes=["unpaid", "operator"], terminates_at=None),
        )
    )
    assert_says(email, "its wallet could not pay for it", "our staff put it on hold")
    assert "will not be terminated" in email.text  # the hold stops the clock


def test_the_warning_a_day_before_says_when(customer, verified):
    email = only_email(
        e.ServiceEndsSoon(
            context="storage",
            kind="volume",
            service_id=SERVICE,
            wallet_id=WALLET,
            owner_id=customer.pk,
            ends_at=AT,
            resource={"name": "db-data"},
        )
    )
    assert email.kind == "service_ends_soon"
    assert_says(email, "volume db-data", "deleted on 3 December 2026, 14:00 UTC", "cannot be recovered")


def test_the_end_of_a_service_says_why(customer, verified):
    email = only_email(
        e.ServerTerminated(
            server_id=SERVICE,
            wallet_id=WALLET,
            reason="unpaid",
            owner_id=customer.pk,
            resource=server(customer.pk),
        )
    )
    assert email.kind == "service_ended"
    assert_says(
        email, "Your server web-1 was terminated", "did not pay for it before the end of the grace period"
    )


def test_an_end_by_an_operator_never_names_the_operator(customer, verified):
    email = only_email(
        e.SubscriptionCancelled(
            subscription_id=SERVICE,
            wallet_id=WALLET,
            reason="operator:bob",
            owner_id=customer.pk,
            resource={"domain": "shop.example.org"},
        )
    )
    assert_says(email, "shop.example.org was cancelled", "our staff ended it")
    assert "bob" not in email.text + email.html


def test_a_service_the_customer_ended_themselves_is_not_announced(customer, verified):
    assert (
        queue(e.VolumeDeleted(volume_id=SERVICE, wallet_id=WALLET, reason="customer", owner_id=customer.pk))
        == []
    )


def test_a_resumed_service_gets_a_short_note(customer, verified):
    email = only_email(
        e.ServerResumed(
            server_id=SERVICE,
            wallet_id=WALLET,
            owner_id=customer.pk,
            resource=server(customer.pk, terminates_at=None),
        )
    )
    assert email.kind == "service_resumed"
    assert_says(email, "web-1 runs again")


def test_top_ups_and_refunds_say_the_amount(customer, verified):
    top_up = uuid.uuid4()
    succeeded = only_email(
        e.WalletToppedUp(
            top_up_id=top_up, wallet_id=WALLET, amount=5000, currency="EUR", owner_id=customer.pk
        )
    )
    assert_says(succeeded, "50.00 EUR", str(top_up))
    OutgoingEmail.objects.all().delete()
    failed = only_email(
        e.TopUpFailed(
            top_up_id=top_up,
            wallet_id=WALLET,
            amount=5000,
            currency="EUR",
            reason="the card was declined",
            owner_id=customer.pk,
        )
    )
    assert failed.kind == "top_up_failed"
    assert_says(failed, "50.00 EUR", "the card was declined", "No money was taken")
    OutgoingEmail.objects.all().delete()
    refund = only_email(
        e.ChargeRefunded(
            refund_id=uuid.uuid4(),
            wallet_id=WALLET,
            charge_id=uuid.uuid4(),
            context="cloud",
            amount=1064,
            currency="EUR",
            owner_id=customer.pk,
        )
    )
    assert refund.kind == "refund_made"
    assert_says(refund, "10.64 EUR", "cloud servers")


def reversed_top_up(owner_id: int, **facts) -> e.TopUpReversed:
    """A card top-up of 50.00 EUR, credited on 18 November 2026, that the provider took
    (some of) back: as Billing's reversal_apply publishes it."""
    top_up = uuid.UUID("6f7a8b9c-0d1e-4f2a-9b3c-4d5e6f7a8b9c")
    resource = {"id": str(top_up), "amount": 5000, "currency": "EUR", "status": "succeeded",
                "wallet": str(WALLET), "provider": "stripe", "debt_paid": 0,
                "created_at": "2026-11-18T09:41:12Z", "completed_at": "2026-11-18T09:41:30Z"}  # fmt: skip
    return e.TopUpReversed(
        top_up_id=top_up, wallet_id=WALLET, currency="EUR", owner_id=owner_id, resource=resource,
        **{"kind": "refund", "amount": 5000, "taken": 5000, "debt_added": 0, "frozen": False, **facts},
    )  # fmt: skip


def test_a_dispute_says_what_was_taken_what_is_owed_and_that_the_wallet_is_frozen(customer, verified):
    # Whatever the categories: it is about the account (money owed, a frozen wallet).
    EmailSettings.objects.filter(pk=verified.pk).update(
        low_balance=False, services=False, payments=False, invoices=False
    )
    email = only_email(reversed_top_up(customer.pk, kind="dispute", taken=1250, debt_added=3750, frozen=True))
    assert (email.kind, email.to) == ("top_up_reversed", "alice@example.com")
    assert email.subject == "Your card payment of 50.00 EUR was disputed: your wallet is frozen"
    assert_says(
        email,
        "disputed your card payment of",
        "on 18 November 2026",
        "12.50 EUR",
        "37.50 EUR",
        "now owes it",
        "Your next top-up pays that first",
        "Your wallet is frozen",
        "no purchase and no renewal",
        "until our staff unfreeze it",
        "Contact our support",
        "6f7a8b9c-0d1e-4f2a-9b3c-4d5e6f7a8b9c",
        f"POST {settings.IAAS_PUBLIC_URL}/api/v1/wallets/{WALLET}/top-ups/",
    )
    assert "whatever your email preferences say" in email.text
    assert "#dc2626" in email.html


def test_a_refund_the_wallet_paid_back_says_it_owes_nothing_and_is_not_frozen(customer, verified):
    email = only_email(reversed_top_up(customer.pk, amount=2000, taken=2000))
    assert email.subject == "20.00 EUR of your card payment of 50.00 EUR was refunded"
    assert "refunded in part: 20.00 EUR went back to the card" in email.text
    assert_says(
        email,
        "20.00 EUR",
        "The wallet owes nothing",
        "Your wallet is not frozen",
        "If you did not expect this refund",
    )
    assert "top-ups/" not in email.text  # nothing owed: no top-up to ask for
    assert "#d97706" in email.html  # a warning, not an alarm


def test_a_reversal_that_found_nothing_available_says_the_whole_amount_is_owed(customer, verified):
    email = only_email(reversed_top_up(customer.pk, taken=0, debt_added=5000, frozen=True))
    assert email.subject == "Your card payment of 50.00 EUR was refunded: your wallet is frozen"
    assert_says(email, "had nothing available", "(it owes money)")
    assert "it now owes the whole 50.00 EUR" in email.text


def test_a_reversal_is_not_emailed_to_an_unverified_address(customer):
    emails.settings_for(customer.pk)
    assert queue(reversed_top_up(customer.pk, kind="dispute", frozen=True)) == []


def test_an_invoice_says_its_number_period_total_and_pdf(customer, verified):
    invoice = uuid.uuid4()
    email = only_email(
        e.InvoiceIssued(
            invoice_id=invoice,
            number="INV-2026-000187",
            owner_id=customer.pk,
            currency="EUR",
            total=8742,
            resource={
                "period_start": "2026-11-01T00:00:00+00:00",
                "period_end": "2026-12-01T00:00:00+00:00",
                "lines": [{"description": "Server web-1 <b>", "amount": 8742}],
            },
        )
    )
    assert email.kind == "invoice_issued"
    assert_says(
        email,
        "INV-2026-000187",
        f"1 {EN_DASH} 30 November 2026",
        "87.42 EUR",
        f"/api/v1/invoices/{invoice}/pdf/",
    )
    assert "Server web-1 <b>" in email.text
    assert "Server web-1 &lt;b&gt;" in email.html  # escaped in the HTML


def test_an_event_without_a_resource_still_composes(customer, verified):
    email = only_email(
        e.ServerSuspended(
            server_id=SERVICE, wallet_id=WALLET, reason="x", cause="unpaid", owner_id=customer.pk
        )
    )
    assert_says(email, str(SERVICE), "grace period")


# --- Who gets what ------------------------------------------------------------------------


def low_balance(owner_id: int) -> e.LowBalanceReached:
    return e.LowBalanceReached(wallet_id=WALLET, owner_id=owner_id, currency="EUR", available=1, threshold=2)


def invoice(owner_id: int) -> e.InvoiceIssued:
    return e.InvoiceIssued(
        invoice_id=uuid.uuid4(), number="INV-1", owner_id=owner_id, currency="EUR", total=1
    )


def test_a_category_turned_off_gets_nothing_and_the_others_still_go(customer, verified):
    verified.low_balance = False
    verified.save()
    assert queue(low_balance(customer.pk)) == []
    assert [m.kind for m in queue(invoice(customer.pk))] == ["invoice_issued"]


def test_an_unverified_address_gets_nothing_but_its_link(customer):
    emails.on_customer_registered(
        e.CustomerRegistered(owner_id=customer.pk, username="alice", email="alice@example.com")
    )
    queue(low_balance(customer.pk))
    queue(invoice(customer.pk))
    assert [m.kind for m in OutgoingEmail.objects.all()] == ["verify_email"]


def test_a_duplicate_event_queues_one_email(customer, verified):
    event = invoice(customer.pk)
    queue(event)
    queue(event)
    assert OutgoingEmail.objects.count() == 1


def test_an_event_of_another_customer_goes_to_theirs(customer, verified):
    other = UserFactory(email="bob@example.com")
    EmailSettings.objects.create(owner=other, address="bob@example.com", verified_at=timezone.now())
    assert [m.to for m in queue(invoice(other.pk))] == ["bob@example.com"]


# --- Registration, settings, verification -------------------------------------------------


def test_registration_makes_the_settings_and_sends_the_link(customer):
    event = e.CustomerRegistered(owner_id=customer.pk, username="alice", email="alice@work.example")
    emails.on_customer_registered(event)
    emails.on_customer_registered(event)  # delivered twice
    row = EmailSettings.objects.get(owner=customer)
    assert (row.address, row.verified_at) == ("alice@work.example", None)
    assert row.verification_sent_at is not None
    assert (row.low_balance, row.services, row.payments, row.invoices) == (True, True, True, True)
    email = OutgoingEmail.objects.get()
    assert (email.kind, email.to, email.event_id) == ("verify_email", "alice@work.example", event.event_id)
    assert f"{settings.IAAS_PUBLIC_URL}/email/verify/" in email.text
    assert f"{settings.IAAS_PUBLIC_URL}/email/verify/" in email.html
    assert "nothing else is sent" in email.text


def test_a_customer_from_before_the_table_gets_their_account_address_unverified(customer):
    row = emails.settings_for(customer.pk)
    assert (row.address, row.verified_at) == ("alice@example.com", None)
    assert emails.settings_for(customer.pk).pk == row.pk


def link_token(email: OutgoingEmail) -> str:
    return email.text.split("/email/verify/")[1].split("/")[0]


def registered(customer) -> str:
    emails.on_customer_registered(
        e.CustomerRegistered(owner_id=customer.pk, username="alice", email="alice@example.com")
    )
    return link_token(OutgoingEmail.objects.get(kind="verify_email"))


def test_the_link_verifies_the_address(customer):
    token = registered(customer)
    assert verification.email_verify(token) is verification.Verdict.VERIFIED
    assert EmailSettings.objects.get(owner=customer).verified_at is not None
    assert verification.email_verify(token) is verification.Verdict.ALREADY_VERIFIED
    assert [m.kind for m in queue(invoice(customer.pk))] == ["verify_email", "invoice_issued"]


def test_a_tampered_link_verifies_nothing(customer):
    token = registered(customer)
    forged = signing.dumps({"o": customer.pk, "a": "alice@example.com"}, salt="another.salt", compress=True)
    for bad in (token[:-2] + "xx", forged, "garbage"):
        assert verification.email_verify(bad) is verification.Verdict.INVALID
    assert EmailSettings.objects.get(owner=customer).verified_at is None


def test_an_expired_link_verifies_nothing(customer, monkeypatch):
    emails.settings_for(customer.pk)
    eight_days_ago = time.time() - 8 * 24 * 3600
    monkeypatch.setattr(signing.time, "time", lambda: eight_days_ago)
    token = verification.token_for(owner_id=customer.pk, address="alice@example.com")
    monkeypatch.undo()
    assert verification.email_verify(token) is verification.Verdict.EXPIRED
    assert EmailSettings.objects.get(owner=customer).verified_at is None


def test_a_link_for_an_address_changed_since_verifies_nothing(customer):
    token = registered(customer)
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=2)):
        emails.email_settings_update(
            owner_id=customer.pk,
            address="alice@new.example",
            low_balance=True,
            services=True,
            payments=True,
            invoices=True,
        )
    assert verification.email_verify(token) is verification.Verdict.ADDRESS_CHANGED
    assert EmailSettings.objects.get(owner=customer).verified_at is None


def test_the_page_says_verified_or_why_not(client, customer):
    token = registered(customer)
    response = client.get(f"/email/verify/{token}/")
    assert response.status_code == 200
    assert b"Your email address is verified" in response.content
    assert response["Referrer-Policy"] == "no-referrer"
    bad = client.get(f"/email/verify/{token}x/")
    assert bad.status_code == 400
    assert b"This link does not work" in bad.content
    assert client.post(f"/email/verify/{token}/").status_code == 405


# --- The account ---------------------------------------------------------------------------


def disabled_endpoint(owner) -> WebhookEndpoint:
    now = timezone.now()
    return WebhookEndpoint.objects.create(
        owner=owner,
        url="https://hooks.example.com/in",
        event_types=["invoice.issued"],
        enabled=False,
        secret_encrypted="x",
        failing_since=now - dt.timedelta(days=5),
        disabled_at=now,
        disabled_reason="Every attempt failed for 5 days.",
    )


def test_a_disabled_endpoint_is_told_whatever_the_categories(customer, verified):
    EmailSettings.objects.filter(pk=verified.pk).update(
        low_balance=False, services=False, payments=False, invoices=False
    )
    endpoint = disabled_endpoint(customer)
    emails.queue_endpoint_disabled(endpoint)
    emails.queue_endpoint_disabled(endpoint)  # recorded twice: told once
    email = OutgoingEmail.objects.get()
    assert email.kind == "webhook_endpoint_disabled"
    assert_says(email, "https://hooks.example.com/in", str(endpoint.pk), "was disabled")
    assert '{"enabled": true}' in email.text


def test_a_disabled_endpoint_of_an_unverified_address_is_not_emailed(customer):
    emails.queue_endpoint_disabled(disabled_endpoint(customer))
    assert not OutgoingEmail.objects.exists()


# --- Sending and outcomes -----------------------------------------------------------------


def test_send_hands_text_and_html_to_the_email_backend(customer, verified):
    email = only_email(invoice(customer.pk))
    emails.send(email)
    (message,) = mail.outbox
    assert message.to == ["alice@example.com"]
    assert message.subject == email.subject
    assert message.body == email.text
    assert message.alternatives[0][0] == email.html
    assert message.alternatives[0][1] == "text/html"
    assert message.extra_headers["Message-ID"] == f"<{email.pk}@localhost>"
    assert message.extra_headers["Auto-Submitted"] == "auto-generated"


@override_settings(IAAS_EMAIL_MAX_ATTEMPTS=3)
def test_the_sender_sends_due_emails_once(customer, verified):
    queue(invoice(customer.pk))
    report = sender.send_due()
    assert report.emails_sent == 1
    assert len(mail.outbox) == 1
    email = OutgoingEmail.objects.get()
    assert (email.status, email.attempts, email.claimed_until) == ("sent", 1, None)
    sender.send_due()
    assert len(mail.outbox) == 1


def claimed(customer) -> tuple[OutgoingEmail, dt.datetime]:
    queue(invoice(customer.pk))
    rows, until = sender.claim_emails(limit=10, now=timezone.now())
    return rows[0], until


def test_a_failure_is_retried_with_backoff(customer, verified):
    email, until = claimed(customer)
    before = timezone.now()
    emails.outcome_record(email_id=email.pk, error="SMTPServerDisconnected: gone", claimed_until=until)
    email.refresh_from_db()
    assert (email.status, email.attempts, email.claimed_until) == ("pending", 1, None)
    assert email.last_error == "SMTPServerDisconnected: gone"
    assert (
        before + dt.timedelta(seconds=47)
        <= email.next_attempt_at
        <= timezone.now() + dt.timedelta(seconds=73)
    )
    # The next delay is four times longer.
    _, until = sender.claim_emails(limit=10, now=email.next_attempt_at)
    emails.outcome_record(email_id=email.pk, error="again", claimed_until=until)
    email.refresh_from_db()
    assert email.attempts == 2
    assert email.next_attempt_at - timezone.now() >= dt.timedelta(seconds=4 * 60 * 0.8 - 1)


@override_settings(IAAS_EMAIL_MAX_ATTEMPTS=2)
def test_it_gives_up_after_the_last_attempt(customer, verified):
    email, until = claimed(customer)
    emails.outcome_record(email_id=email.pk, error="no", claimed_until=until)
    email.refresh_from_db()
    _, until = sender.claim_emails(limit=10, now=email.next_attempt_at)
    emails.outcome_record(email_id=email.pk, error="no", claimed_until=until)
    email.refresh_from_db()
    assert (email.status, email.attempts) == ("failed", 2)


def test_an_outcome_without_the_claim_changes_nothing(customer, verified):
    email, until = claimed(customer)
    emails.outcome_record(email_id=email.pk, error="", claimed_until=until - dt.timedelta(seconds=1))
    email.refresh_from_db()
    assert (email.status, email.attempts, email.claimed_until) == ("pending", 0, until)
    emails.outcome_record(email_id=email.pk, error="", claimed_until=until)
    email.refresh_from_db()
    assert (email.status, email.attempts) == ("sent", 1)
    emails.outcome_record(
        email_id=email.pk, error="late failure", claimed_until=until
    )  # a sent one stays sent
    email.refresh_from_db()
    assert (email.status, email.last_error) == ("sent", "")


def test_a_deleted_volume_says_its_data_is_gone(customer, verified):
    email = only_email(
        e.VolumeDeleted(
            volume_id=SERVICE,
            wallet_id=WALLET,
            reason="unpaid",
            owner_id=customer.pk,
            resource={"name": "db"},
        )
    )
    assert_says(email, "volume db was deleted", "cannot be recovered")
