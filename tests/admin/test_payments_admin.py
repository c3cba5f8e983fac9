"""Card payments in the operator console: a top-up shows its Stripe PaymentIntent linked to
Stripe's dashboard (test mode for a test key), its refused attempts, the debt it paid and
what the provider took back; the wallet shows its debt and automatic top-up; parked
payments come unresolved first, and Finance marks one resolved with a required resolution
(Support cannot); every payment page is read-only. (Every changelist and change page
renders for every role: tests/admin/test_pages.py, with tests/admin/payment_rows.py.)"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from iaas.billing.admin.payments import stripe_dashboard_url
from iaas.billing.models import (
    AutoTopUp,
    ParkedPayment,
    PaymentCustomer,
    PaymentEvent,
    PaymentMethod,
    PaymentReversal,
    TopUp,
    Wallet,
)
from iaas.operations.reconciliation import reconcile
from tests.factories import funded_wallet

PAYMENT_MODELS = [ParkedPayment, PaymentEvent, PaymentReversal, PaymentMethod, PaymentCustomer, AutoTopUp]


def url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def page(client, address: str) -> str:
    response = client.get(address)
    assert response.status_code == 200
    return response.content.decode()


# --- Stripe ids, linked ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("sk_test_abc", "https://dashboard.stripe.com/test/payments/pi_123"),
        ("rk_test_abc", "https://dashboard.stripe.com/test/payments/pi_123"),
        ("sk_live_abc", "https://dashboard.stripe.com/payments/pi_123"),
        ("rk_live_abc", "https://dashboard.stripe.com/payments/pi_123"),
    ],
)
def test_a_payment_intent_links_to_the_dashboard_of_the_keys_mode(settings, key, expected):
    settings.IAAS_STRIPE_SECRET_KEY = key
    assert stripe_dashboard_url("pi_123") == expected


def test_ids_without_a_dashboard_page_are_not_linked(settings):
    settings.IAAS_STRIPE_SECRET_KEY = "sk_live_abc"
    assert stripe_dashboard_url("evt_9") == "https://dashboard.stripe.com/events/evt_9"
    assert stripe_dashboard_url("ch_1:refunded:500") is None  # a refund's reference, not an id
    assert stripe_dashboard_url("seti_1") is None
    assert stripe_dashboard_url("sandbox-1f0c") is None


def test_the_top_up_page_shows_the_card_payment(as_role, books, settings):
    settings.IAAS_STRIPE_SECRET_KEY = "sk_test_books"
    rows = books["payments"]
    top_up = rows["top_up"]
    text = page(as_role("support"), url(TopUp, "change", top_up.pk))
    assert 'href="https://dashboard.stripe.com/test/payments/pi_books_paid"' in text
    assert '<div class="readonly">Customer</div>' in text  # its origin
    reversal = rows["reversal"]
    assert url(PaymentReversal, "change", reversal.pk) in text  # what the provider took back
    assert "5.00 EUR" in text

    settings.IAAS_STRIPE_SECRET_KEY = "sk_live_books"
    text = page(as_role("support"), url(TopUp, "change", top_up.pk))
    assert 'href="https://dashboard.stripe.com/payments/pi_books_paid"' in text
    listed = page(as_role("support"), url(TopUp, "changelist"))
    assert 'href="https://dashboard.stripe.com/payments/pi_books_paid"' in listed


def test_a_top_up_shows_its_refused_attempts_and_the_debt_it_paid(as_role, books, settings):
    wallet = books["wallet"]
    top_up = TopUp.objects.create(
        wallet=wallet,
        amount=1_000,
        currency="EUR",
        provider="stripe",
        provider_reference="pi_declined",
        reference="declined",
        failed_attempts=2,
        failure_code="card_declined",
        failure_message="Your card was declined.",
    )
    TopUp.objects.filter(pk=books["payments"]["top_up"].pk).update(debt_paid=300)
    client = as_role("support")
    text = page(client, url(TopUp, "change", top_up.pk))
    assert '<div class="readonly">2</div>' in text
    assert '<div class="readonly">card_declined</div>' in text
    assert '<div class="readonly">Your card was declined.</div>' in text
    assert 'href="https://dashboard.stripe.com' in text
    paid = page(client, url(TopUp, "change", books["payments"]["top_up"].pk))
    assert '<span class="money">3.00 EUR</span>' in paid  # of which paid debt


def test_a_sandbox_top_up_has_no_dashboard_link(as_role, books):
    sandbox = TopUp.objects.filter(wallet=books["wallet"], provider="sandbox").first()
    text = page(as_role("support"), url(TopUp, "change", sandbox.pk))
    assert "dashboard.stripe.com" not in text
    assert sandbox.provider_reference in text


# --- The wallet: its debt and automatic top-up ---------------------------------------------------


def test_the_wallet_shows_its_debt_and_automatic_top_up(as_role, books):
    from iaas.billing import reversals, services

    wallet = funded_wallet(amount=1_000)
    services.wallet_adjust(wallet_id=wallet.id, amount=-600, reason="spent", operator_id=wallet.owner_id)
    top_up = TopUp.objects.get(wallet=wallet)
    reversals.reversal_apply(top_up_id=top_up.id, kind="dispute", reference="dp_debt", amount=1_000)
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.debt) == (0, 600)
    client = as_role("support")
    text = page(client, url(Wallet, "change", wallet.pk))
    assert '<span class="money">6.00 EUR</span>' in text
    assert "Dispute" in text  # the reversal, on the wallet's page
    in_debt = client.get(url(Wallet, "changelist"), {"in_debt": "yes"})
    assert [w.pk for w in in_debt.context["cl"].result_list] == [wallet.pk]
    assert wallet.money(wallet.debt) in in_debt.content.decode()

    alice = books["wallet"]
    text = page(client, url(Wallet, "change", alice.pk))
    auto = books["payments"]["auto_top_up"]
    assert url(AutoTopUp, "change", auto.pk) in text
    assert "waiting for the balance to drop below the threshold" in text.lower()
    assert "visa ****4242" in text


def test_the_automatic_top_up_page_tells_its_state(as_role, books):
    auto = books["payments"]["auto_top_up"]
    later = timezone.now() + dt.timedelta(hours=1)
    AutoTopUp.objects.filter(pk=auto.pk).update(
        due_at=timezone.now(),
        next_attempt_at=later,
        consecutive_failures=2,
        last_failure_code="card_declined",
    )
    text = page(as_role("support"), url(AutoTopUp, "change", auto.pk))
    assert f"next attempt {later:%Y-%m-%d %H:%M}" in text
    assert "2 refusal(s) in a row, the last: card_declined" in text


# --- Parked payments --------------------------------------------------------------------------------


def resolve(client, parked, **data):
    return client.post(
        url(ParkedPayment, "changelist"),
        {"action": "resolve_parked_payments", "_selected_action": [parked.pk], **data},
        follow=True,
    )


def test_parked_payments_waiting_come_first(as_role, books, superuser):
    parked = books["payments"]["parked"]
    older_resolved = ParkedPayment.objects.create(
        provider="stripe",
        payment_reference="pi_resolved_later",
        amount=100,
        currency="EUR",
        why="x",
        parked_at=timezone.now() + dt.timedelta(minutes=5),  # newer, but resolved
        resolved_at=timezone.now(),
        resolved_by=superuser,
        resolution="Refunded at Stripe",
    )
    listed = as_role("support").get(url(ParkedPayment, "changelist")).context["cl"].result_list
    assert [p.pk for p in listed] == [parked.pk, older_resolved.pk]
    waiting = as_role("support").get(url(ParkedPayment, "changelist"), {"resolved": "no"})
    assert [p.pk for p in waiting.context["cl"].result_list] == [parked.pk]


def test_finance_marks_a_parked_payment_resolved_with_a_resolution(as_role, books, finance, settings):
    settings.IAAS_STRIPE_SECRET_KEY = "sk_test_books"
    parked = books["payments"]["parked"]
    client = as_role("finance")
    text = page(client, url(ParkedPayment, "change", parked.pk))
    assert "Mark resolved" in text
    assert 'href="https://dashboard.stripe.com/test/payments/pi_books_parked"' in text
    assert reconcile().parked_payments == 1

    asked = resolve(client, parked).content.decode()  # the confirmation page asks for it
    assert "Resolution (what was done with the money)" in asked
    assert ParkedPayment.objects.get(pk=parked.pk).resolved_at is None
    again = resolve(client, parked, confirmed="yes", reason="  ").content.decode()
    assert "Give a reason" in again
    assert ParkedPayment.objects.get(pk=parked.pk).resolved_at is None

    done = resolve(
        client, parked, confirmed="yes", reason="Credited to alice by an adjustment"
    ).content.decode()
    assert "Resolved" in done
    parked.refresh_from_db()
    assert (parked.resolved_by, parked.resolution) == (finance, "Credited to alice by an adjustment")
    assert parked.resolved_at is not None
    assert reconcile().parked_payments == 0
    assert "Mark resolved" in page(client, url(ParkedPayment, "change", parked.pk))  # offered, refused:

    refused = resolve(client, parked, confirmed="yes", reason="again").content.decode()
    assert "resolved already" in refused
    parked.refresh_from_db()
    assert parked.resolution == "Credited to alice by an adjustment"


def test_support_cannot_resolve_a_parked_payment(as_role, books):
    parked = books["payments"]["parked"]
    client = as_role("support")
    assert "Mark resolved" not in page(client, url(ParkedPayment, "change", parked.pk))
    response = client.post(
        url(ParkedPayment, "changelist"),
        {
            "action": "resolve_parked_payments",
            "_selected_action": [parked.pk],
            "confirmed": "yes",
            "reason": "mine now",
        },
    )
    assert response.status_code == 403
    assert ParkedPayment.objects.get(pk=parked.pk).resolved_at is None


# --- Read-only ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", PAYMENT_MODELS, ids=lambda model: model._meta.label)
def test_no_one_edits_adds_or_deletes_a_payment_record(as_role, books, model):
    client = as_role("superuser")
    obj = model.objects.first()
    change = url(model, "change", obj.pk)
    assert list(client.get(change).context["adminform"].form.fields) == []
    before = list(model.objects.order_by("pk").values())
    assert client.post(change, {"amount": "1", "resolution": "x", "status": "active"}).status_code == 403
    assert client.get(url(model, "delete", obj.pk)).status_code == 403
    assert client.get(url(model, "add")).status_code == 403
    assert "delete_selected" not in admin.site._registry[model].get_actions(client.get(change).wsgi_request)
    assert list(model.objects.order_by("pk").values()) == before


def test_the_search_finds_payments_by_their_provider_ids(as_role, books):
    client = as_role("support")
    for model, term in [
        (PaymentEvent, "evt_books_paid"),
        (PaymentEvent, "pi_books_paid"),
        (ParkedPayment, "pi_books_parked"),
        (PaymentReversal, "pi_books_paid"),
        (PaymentMethod, "alice"),
        (PaymentCustomer, "cus_books"),
        (TopUp, "pi_books_paid"),
    ]:
        found = client.get(url(model, "changelist"), {"q": term}).context["cl"].result_count
        assert found == 1, (model, term)
    filtered = client.get(
        url(PaymentEvent, "changelist"), {"outcome": "credited", "type": "payment_intent.succeeded"}
    )
    assert filtered.context["cl"].result_count == 1
    assert client.get(url(PaymentEvent, "changelist"), {"outcome": "parked"}).context["cl"].result_count == 0


# --- Amounts typed in the currency's own minor units --------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "typed", "minor"),
    [("EUR", "12.50", 1250), ("JPY", "1250", 1250), ("KWD", "1.250", 1250)],
)
def test_an_adjustment_is_read_in_the_currencys_own_decimals(
    as_role, books, settings, currency, typed, minor
):
    settings.IAAS_SUPPORTED_CURRENCIES = ["EUR", "JPY", "KWD"]
    wallet = funded_wallet(amount=0, currency=currency)
    response = as_role("finance").post(
        reverse("admin:billing_wallet_adjust", args=[wallet.pk]),
        {"direction": "credit", "amount": typed, "reason": "Goodwill", "operation_token": str(uuid.uuid4())},
    )
    assert response.status_code == 302, response.content.decode()
    wallet.refresh_from_db()
    assert wallet.balance == minor


@pytest.mark.parametrize(("currency", "typed"), [("JPY", "12.5"), ("KWD", "1.2505"), ("EUR", "1.255")])
def test_more_decimals_than_the_currency_has_are_refused(as_role, books, settings, currency, typed):
    settings.IAAS_SUPPORTED_CURRENCIES = ["EUR", "JPY", "KWD"]
    wallet = funded_wallet(amount=0, currency=currency)
    adjust = reverse("admin:billing_wallet_adjust", args=[wallet.pk])
    form = as_role("finance").get(adjust).content.decode()
    assert {"EUR": "e.g. 12.50", "JPY": "e.g. 12<", "KWD": "e.g. 12.500"}[currency] in form
    response = as_role("finance").post(adjust, {"direction": "credit", "amount": typed, "reason": "Goodwill"})
    assert response.status_code == 200
    assert "At most" in response.content.decode()
    wallet.refresh_from_db()
    assert wallet.balance == 0


def test_reversal_entries_link_what_they_book(as_role, books):
    from iaas.billing import reversals, services
    from iaas.billing.models import LedgerEntry

    client = as_role("support")
    reversal = books["payments"]["reversal"]
    text = page(client, url(LedgerEntry, "change", reversal.ledger_entry_id))
    assert f'href="{url(PaymentReversal, "change", reversal.pk)}"' in text

    wallet = funded_wallet(amount=1_000)
    services.wallet_adjust(wallet_id=wallet.id, amount=-600, reason="spent", operator_id=wallet.owner_id)
    reversals.reversal_apply(
        top_up_id=TopUp.objects.get(wallet=wallet).id, kind="refund", reference="re_x", amount=1_000
    )
    paying = services.top_up_create(wallet_id=wallet.id, owner_id=wallet.owner_id, amount=700)
    assert paying.debt_paid == 600
    debt_entry = LedgerEntry.objects.get(wallet=wallet, reference=f"debt:{paying.id}")
    text = page(client, url(LedgerEntry, "change", debt_entry.pk))
    assert f'href="{url(TopUp, "change", paying.pk)}"' in text
