"""Billing's reserve in one statement (``wallet_reserve_if_available``): the conditional
UPDATE that locks, checks and reserves, and the reasons it distinguishes when it changes
nothing. The purchase's refusals, one per reason, on both ways of running the writes
(folded on PostgreSQL, and the portable way SQLite takes), are in
tests/integration/test_purchase_flows.py."""

from __future__ import annotations

import pytest
from django.db import transaction

from iaas.billing import services
from iaas.billing.locks import wallet_reserve_if_available
from iaas.billing.models import Hold, Reservation, Wallet
from iaas.contracts.errors import CurrencyMismatch, InsufficientFunds, WalletNotActive, WalletNotFound
from iaas.contracts.models import OutboxMessage
from tests.factories import UserFactory, billing_consistent, funded_wallet

pytestmark = pytest.mark.django_db


def a_reserve_refused_for(refusal: str, wallet) -> dict:
    """What a reserve of 500 out of the 100.00 EUR wallet names, made wrong for one
    reason (the wallet's status set for "frozen" or "closed")."""
    asked = {"owner_id": wallet.owner_id, "currency": "EUR", "amount": 500, "minimum": 500}
    if refusal == "another customer's wallet":
        asked["owner_id"] = UserFactory().id
    elif refusal == "another currency":
        asked["currency"] = "USD"
    elif refusal == "short of money":
        asked["amount"] = asked["minimum"] = 10_001
    else:
        Wallet.objects.filter(pk=wallet.pk).update(status=refusal)
    return asked


def reserve_statement(wallet, *, owner_id=None, currency="EUR", amount, minimum):
    with transaction.atomic():
        return wallet_reserve_if_available(
            wallet.id,
            owner_id=wallet.owner_id if owner_id is None else owner_id,
            currency=currency,
            amount=amount,
            minimum=minimum,
        )


def test_it_grants_the_amount_when_the_wallet_has_it(wallet):
    reserved = reserve_statement(wallet, amount=700, minimum=300)
    assert (reserved.granted, reserved.available_before) == (700, 10_000)
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (10_000, 700)
    # and the wallet as the grant left it, read from the same statement (what the API shows)
    returned = reserved.wallet
    assert (returned.id, returned.owner_id, returned.currency, returned.status) == (
        wallet.id,
        wallet.owner_id,
        "EUR",
        "active",
    )
    assert (returned.balance, returned.reserved, returned.available) == (10_000, 700, 9_300)
    assert (returned.low_balance_threshold, returned.created_at) == (None, wallet.created_at)


def test_it_grants_what_is_unreserved_between_the_minimum_and_the_amount(wallet):
    reserve_statement(wallet, amount=9_000, minimum=9_000)
    # 1,000 unreserved: at least 300 wanted, up to 5,000.
    reserved = reserve_statement(wallet, amount=5_000, minimum=300)
    assert (reserved.granted, reserved.available_before, reserved.wallet.available) == (1_000, 1_000, 0)
    wallet.refresh_from_db()
    assert wallet.reserved == wallet.balance == 10_000  # I2 at its edge, never past it


@pytest.mark.parametrize(
    "refusal",
    ["another customer's wallet", "another currency", "short of money", "frozen", "closed"],
)
def test_it_changes_nothing_for_each_reason_it_refuses(wallet, refusal):
    kwargs = a_reserve_refused_for(refusal, wallet)
    before = Wallet.objects.values("balance", "reserved", "updated_at").get(pk=wallet.pk)
    assert reserve_statement(wallet, **kwargs) is None
    assert Wallet.objects.values("balance", "reserved", "updated_at").get(pk=wallet.pk) == before


@pytest.mark.parametrize("folded", [True, False], ids=["folded", "portable"])
@pytest.mark.parametrize(
    ("refusal", "error"),
    [
        ("another customer's wallet", WalletNotFound),
        ("another currency", CurrencyMismatch),
        ("short of money", InsufficientFunds),
        ("frozen", WalletNotActive),
    ],
)
def test_reserve_says_why_it_refused_and_records_nothing(settings, wallet, refusal, error, folded):
    settings.IAAS_FOLD_STATEMENTS = folded
    kwargs = a_reserve_refused_for(refusal, wallet)
    with pytest.raises(error), transaction.atomic():
        services.funds_reserve(wallet_id=wallet.id, context="cloud", **kwargs)
    assert not Reservation.objects.exists()
    assert not Hold.objects.exists()
    assert not OutboxMessage.objects.filter(event_type="FundsReserved").exists()
    billing_consistent()


@pytest.mark.parametrize("folded", [True, False], ids=["folded", "portable"])
def test_a_grant_grows_the_hold_and_records_the_reservation_and_its_event(settings, folded):
    settings.IAAS_FOLD_STATEMENTS = folded
    wallet = funded_wallet(amount=1_000)
    grant = {"wallet_id": wallet.id, "owner_id": wallet.owner_id, "context": "cloud", "currency": "EUR"}
    with transaction.atomic():
        first = services.funds_reserve(**grant, amount=400, minimum=1)
        second = services.funds_reserve(**grant, amount=900, minimum=1)
    assert (first.amount, second.amount) == (400, 600)
    hold = Hold.objects.get(wallet=wallet, context="cloud")
    assert (hold.amount, hold.granted_total) == (1_000, 1_000)
    assert sorted(Reservation.objects.values_list("amount", flat=True)) == [400, 600]
    recorded = OutboxMessage.objects.filter(event_type="FundsReserved").order_by("id")
    assert [row.payload["amount"] for row in recorded] == [400, 600]
    assert [row.payload["reservation_id"] for row in recorded] == [str(first.id), str(second.id)]
    billing_consistent()
