"""Wallets and top-ups, as a customer or the payment provider sees them."""

import pytest
from django.db import connection

from iaas.billing import services
from iaas.billing.models import LedgerEntry, TopUp
from iaas.contracts import bus
from iaas.contracts.errors import WalletExists, WalletNotActive, WalletNotFound
from iaas.contracts.events import WalletToppedUp
from tests.factories import funded_wallet

pytestmark = pytest.mark.django_db


def test_a_new_wallet_is_empty_and_active(customer):
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    assert (wallet.balance, wallet.reserved, wallet.available, wallet.status) == (0, 0, 0, "active")


def test_one_wallet_per_owner_and_currency(customer):
    services.wallet_create(owner_id=customer.id, currency="EUR")
    with pytest.raises(WalletExists):
        services.wallet_create(owner_id=customer.id, currency="EUR")
    assert services.wallet_create(owner_id=customer.id, currency="USD").currency == "USD"


def test_an_unsupported_currency_is_refused(customer):
    with pytest.raises(ValueError, match="unsupported currency"):
        services.wallet_create(owner_id=customer.id, currency="eur")


def test_a_sandbox_top_up_credits_the_wallet_at_once(customer, assert_invariants):
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    top_up = services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=2_500)
    wallet.refresh_from_db()
    assert top_up.status == TopUp.Status.SUCCEEDED
    assert wallet.balance == 2_500
    entry = wallet.ledger_entries.get()
    assert (entry.kind, entry.amount, entry.balance_after, entry.sequence) == ("top_up", 2_500, 2_500, 1)
    assert_invariants()


def test_the_same_reference_is_credited_once(customer):
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    first = services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=700, reference="bank-42")
    again = services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=700, reference="bank-42")
    wallet.refresh_from_db()
    assert first.id == again.id
    assert wallet.balance == 700
    assert wallet.ledger_entries.count() == 1


@pytest.mark.parametrize("amount", [0, -5, 100_000_001, 10.0, "10", True])
def test_a_top_up_amount_must_be_a_positive_integer_within_the_limit(customer, amount):
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    with pytest.raises(ValueError, match="a top-up is 1 to"):
        services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=amount)
    assert not TopUp.objects.exists()


def test_a_top_up_of_another_customers_wallet_is_not_found(customer, other_customer):
    wallet = funded_wallet(other_customer, amount=100)
    with pytest.raises(WalletNotFound):
        services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=100)
    wallet.refresh_from_db()
    assert wallet.balance == 100


def test_a_manual_top_up_stays_pending_until_confirmed_then_credits_once(customer, settings):
    settings.IAAS_PAYMENT_PROVIDER = "iaas.billing.payments.ManualPaymentProvider"
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    top_up = services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=1_000)
    wallet.refresh_from_db()
    assert (top_up.status, wallet.balance) == ("pending", 0)

    services.top_up_confirm(top_up_id=top_up.id)
    services.top_up_confirm(top_up_id=top_up.id)
    wallet.refresh_from_db()
    assert wallet.balance == 1_000
    assert wallet.ledger_entries.count() == 1


def test_a_failed_top_up_credits_nothing(customer, settings):
    settings.IAAS_PAYMENT_PROVIDER = "iaas.billing.payments.ManualPaymentProvider"
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    top_up = services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=1_000)
    services.top_up_fail(top_up_id=top_up.id)
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.ledger_entries.count()) == (0, 0)


def test_a_success_after_a_failure_is_credited_once_the_money_is_there(customer, settings):
    """ARCHITECTURE.md: a provider's success always credits (once), whenever it arrives."""
    settings.IAAS_PAYMENT_PROVIDER = "iaas.billing.payments.ManualPaymentProvider"
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    top_up = services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=1_000)
    services.top_up_fail(top_up_id=top_up.id)
    services.top_up_confirm(top_up_id=top_up.id)
    services.top_up_confirm(top_up_id=top_up.id)
    wallet.refresh_from_db()
    top_up.refresh_from_db()
    assert (wallet.balance, wallet.ledger_entries.count(), top_up.status) == (1_000, 1, "succeeded")


def test_a_frozen_wallet_takes_no_top_up(customer):
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    services.wallet_set_status(wallet_id=wallet.id, status="frozen")
    with pytest.raises(WalletNotActive):
        services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=100)


def test_a_top_up_publishes_wallet_topped_up(customer, monkeypatch):
    seen = []
    monkeypatch.setitem(bus._handlers, "WalletToppedUp", {"test.spy": seen.append})
    monkeypatch.setitem(bus._handlers_by_name, "test.spy", seen.append)
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    top_up = services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=300)
    bus.deliver_pending()
    assert seen == [
        WalletToppedUp(
            event_id=seen[0].event_id,
            occurred_at=seen[0].occurred_at,
            top_up_id=top_up.id,
            wallet_id=wallet.id,
            amount=300,
            currency="EUR",
            owner_id=customer.id,
            resource={
                "id": str(top_up.id),
                "amount": 300,
                "currency": "EUR",
                "status": "succeeded",
                "wallet": str(wallet.id),
                "provider": "sandbox",
                "provider_reference": f"sandbox-{top_up.id}",
                "origin": "customer",
                "payment_method": None,
                "failed_attempts": 0,
                "failure_code": "",
                "failure_message": "",
                "debt_paid": 0,
                "created_at": top_up.created_at.isoformat().replace("+00:00", "Z"),
                "completed_at": top_up.completed_at.isoformat().replace("+00:00", "Z"),
            },
        )
    ]


def test_ledger_sequences_and_balances_chain(customer, assert_invariants):
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    for amount in (100, 250, 50):
        services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=amount)
    entries = list(LedgerEntry.objects.filter(wallet=wallet).order_by("sequence"))
    assert [e.sequence for e in entries] == [1, 2, 3]
    assert [e.balance_after for e in entries] == [100, 350, 400]
    assert_invariants()


def test_the_ledger_trigger_is_installed():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'billing_ledgerentry_append_only'")
        assert cursor.fetchone()[0] == 1
