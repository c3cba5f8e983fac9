"""Refunds: one settled charge's money back, at most once and at most its amount."""

import pytest
from django.db import IntegrityError, connection, transaction

from iaas.billing import services
from iaas.billing.models import LedgerEntry, Refund
from iaas.contracts.errors import NotFound, RefundRefused
from iaas.hosting import services as hosting
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(db):
    return UserFactory(username="fin", is_staff=True)


@pytest.fixture
def charge(catalog, customer, wallet, deliver):
    hosting.subscription_create(
        owner_id=customer.id, wallet_id=wallet.id, domain="r.example", plan_id="web-starter"
    )
    deliver()
    return LedgerEntry.objects.get(wallet=wallet, kind="charge")


def test_a_full_refund_credits_the_charge_back(charge, wallet, operator, assert_invariants):
    refund = services.charge_refund(
        charge_entry_id=charge.id, reason="site never worked", operator_id=operator.id
    )
    wallet.refresh_from_db()
    assert refund.amount == 399
    assert wallet.balance == 10_000
    entry = refund.ledger_entry
    assert (entry.kind, entry.amount, entry.context, entry.created_by_id) == (
        "refund",
        399,
        "hosting",
        operator.id,
    )
    assert "site never worked" in entry.description
    assert_invariants()


def test_a_partial_refund_then_no_second_one(charge, wallet, operator, assert_invariants):
    services.charge_refund(charge_entry_id=charge.id, amount=100, reason="downtime", operator_id=operator.id)
    with pytest.raises(RefundRefused, match="refunded already"):
        services.charge_refund(charge_entry_id=charge.id, amount=100, reason="again", operator_id=operator.id)
    wallet.refresh_from_db()
    assert wallet.balance == 10_000 - 399 + 100
    assert Refund.objects.count() == 1
    assert_invariants()


@pytest.mark.parametrize(
    ("amount", "reason", "message"),
    [
        (400, "too much", "exceeds the charge"),
        (0, "zero", "positive"),
        (-5, "negative", "positive"),
        (10, " ", "reason"),
    ],
)
def test_a_refund_beyond_the_rules_changes_nothing(charge, wallet, operator, amount, reason, message):
    entries = LedgerEntry.objects.count()
    with pytest.raises(RefundRefused, match=message):
        services.charge_refund(
            charge_entry_id=charge.id, amount=amount, reason=reason, operator_id=operator.id
        )
    assert LedgerEntry.objects.count() == entries
    assert not Refund.objects.exists()


def test_only_a_charge_can_be_refunded(wallet, operator):
    top_up = LedgerEntry.objects.get(wallet=wallet, kind="top_up")
    with pytest.raises(RefundRefused, match="Only a charge"):
        services.charge_refund(charge_entry_id=top_up.id, reason="no", operator_id=operator.id)


def test_an_unknown_entry_is_not_found(db, operator):
    import uuid

    with pytest.raises(NotFound):
        services.charge_refund(charge_entry_id=uuid.uuid4(), reason="no", operator_id=operator.id)


def test_refunds_are_append_only(charge, operator):
    refund = services.charge_refund(charge_entry_id=charge.id, reason="x", operator_id=operator.id)
    with (
        pytest.raises(IntegrityError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE billing_refund SET amount = 1 WHERE id = %s", [refund.id])


def test_reconcile_reports_a_refund_larger_than_its_charge(charge, wallet, operator):
    from iaas.operations.reconciliation import reconcile

    refund = services.charge_refund(charge_entry_id=charge.id, amount=10, reason="x", operator_id=operator.id)
    with transaction.atomic(), connection.cursor() as cursor:
        # Plant the drift past the trigger, as a superuser with replication role could.
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("UPDATE billing_refund SET amount = 500 WHERE id = %s", [refund.id])
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
    report = reconcile()
    [violation] = report.violations["I5"]
    assert violation.wallet_id == wallet.id
    assert "does not match the charge" in violation.detail
