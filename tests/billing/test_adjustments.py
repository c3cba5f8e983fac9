"""Operator adjustments: the only way a balance changes outside payments and charges."""

import pytest

from iaas.billing import services
from iaas.billing.models import Adjustment, LedgerEntry
from iaas.cloud import services as cloud_services
from iaas.contracts.errors import AdjustmentRefused
from tests.factories import UserFactory, funded_wallet

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(db):
    return UserFactory(username="finance", is_staff=True)


def test_a_credit_writes_one_adjustment_entry_with_reason_and_operator(wallet, operator, assert_invariants):
    adjustment = services.wallet_adjust(
        wallet_id=wallet.id, amount=500, reason="goodwill for outage", operator_id=operator.id
    )
    wallet.refresh_from_db()
    assert wallet.balance == 10_500
    entry = adjustment.ledger_entry
    assert (entry.kind, entry.amount, entry.created_by_id) == ("adjustment", 500, operator.id)
    assert "goodwill for outage" in entry.description
    assert_invariants()


def test_a_debit_takes_only_unreserved_money(catalog, customer, operator, assert_invariants):
    wallet = funded_wallet(customer, amount=1_000)
    cloud_services.server_create(
        owner_id=customer.id, wallet_id=wallet.id, name="web", plan_id="s-8vcpu-16gb"
    )
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (1_000, 16)

    with pytest.raises(AdjustmentRefused, match="exceeds the available"):
        services.wallet_adjust(
            wallet_id=wallet.id, amount=-1_000, reason="chargeback", operator_id=operator.id
        )
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (1_000, 16)
    assert not Adjustment.objects.exists()

    services.wallet_adjust(wallet_id=wallet.id, amount=-984, reason="chargeback", operator_id=operator.id)
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (16, 16)
    assert_invariants()


@pytest.mark.parametrize(("amount", "reason"), [(0, "nothing"), (100, ""), (100, "   "), (1.5, "float")])
def test_a_malformed_adjustment_changes_nothing(wallet, operator, amount, reason):
    entries = LedgerEntry.objects.count()
    with pytest.raises(AdjustmentRefused):
        services.wallet_adjust(wallet_id=wallet.id, amount=amount, reason=reason, operator_id=operator.id)
    assert LedgerEntry.objects.count() == entries
