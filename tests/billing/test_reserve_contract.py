"""Billing's reserve contract, as Cloud and Hosting call it."""

import pytest
from django.db import transaction

from iaas.billing.models import Hold, Reservation
from iaas.contracts import billing
from iaas.contracts.errors import CurrencyMismatch, InsufficientFunds, WalletNotActive, WalletNotFound
from tests.factories import funded_wallet

pytestmark = pytest.mark.django_db


def reserve(wallet, owner, *, amount, minimum=None, context="cloud", currency="EUR"):
    """Call the contract the way a context does: inside its own (purchase) transaction."""
    with transaction.atomic():
        return billing.reserve(
            wallet_id=wallet.id,
            owner_id=owner.id,
            context=context,
            currency=currency,
            amount=amount,
            minimum=amount if minimum is None else minimum,
        )


def test_a_grant_moves_unreserved_money_into_the_contexts_hold(wallet, customer):
    grant = reserve(wallet, customer, amount=3_000)
    wallet.refresh_from_db()
    assert grant.amount == 3_000
    assert (wallet.balance, wallet.reserved, wallet.available) == (10_000, 3_000, 7_000)
    assert Hold.objects.get(wallet=wallet, context="cloud").amount == 3_000
    record = Reservation.objects.get(pk=grant.reservation_id)
    assert (record.kind, record.amount, record.context) == ("grant", 3_000, "cloud")


def test_a_grant_takes_what_is_available_down_to_the_minimum(wallet, customer):
    reserve(wallet, customer, amount=8_000, context="hosting")
    grant = reserve(wallet, customer, amount=5_000, minimum=1_000)
    assert grant.amount == 2_000


def test_less_than_the_minimum_is_refused_and_nothing_changes(wallet, customer):
    with pytest.raises(InsufficientFunds) as refusal:
        reserve(wallet, customer, amount=20_000, minimum=10_001)
    wallet.refresh_from_db()
    assert wallet.reserved == 0
    assert not refusal.value.release_requested
    assert not Reservation.objects.exists()


def test_a_refusal_asks_other_contexts_to_release_when_they_hold_funds(wallet, customer):
    reserve(wallet, customer, amount=9_000, context="hosting")
    with pytest.raises(InsufficientFunds) as refusal:
        reserve(wallet, customer, amount=2_000, context="cloud")
    assert refusal.value.release_requested
    assert "being released" in refusal.value.detail
    assert len(refusal.value.after_rollback) == 1


def test_another_customers_wallet_is_not_found(wallet, other_customer):
    with pytest.raises(WalletNotFound):
        reserve(wallet, other_customer, amount=100)


def test_a_price_in_another_currency_is_refused(wallet, customer):
    with pytest.raises(CurrencyMismatch):
        reserve(wallet, customer, amount=100, currency="USD")


def test_a_frozen_wallet_grants_nothing(customer):
    from iaas.billing import services

    wallet = funded_wallet(customer, amount=500)
    services.wallet_set_status(wallet_id=wallet.id, status="frozen")
    with pytest.raises(WalletNotActive):
        reserve(wallet, customer, amount=100)


def test_the_wallet_view_is_plain_data_scoped_to_the_owner(wallet, customer, other_customer):
    view = billing.wallet_view(wallet_id=wallet.id, owner_id=customer.id)
    assert (view.id, view.owner_id, view.currency, view.status) == (wallet.id, customer.id, "EUR", "active")
    with pytest.raises(WalletNotFound):
        billing.wallet_view(wallet_id=wallet.id, owner_id=other_customer.id)


@pytest.mark.parametrize(("amount", "minimum"), [(0, 0), (100, 0), (100, 101), (-5, -5)])
def test_a_malformed_reservation_is_refused(wallet, customer, amount, minimum):
    with pytest.raises(ValueError, match="minimum"):
        reserve(wallet, customer, amount=amount, minimum=minimum)
