"""Refunds: one settled charge's money back, at most once and at most its amount; a
charge, not a ledger entry (one entry may settle many charges)."""

import uuid

import pytest
from django.db import IntegrityError, connection, transaction

from iaas.billing import services
from iaas.billing.models import LedgerEntry, Refund, SettledCharge
from iaas.contracts import billing
from iaas.contracts.errors import NotFound, RefundRefused
from iaas.contracts.events import ChargeRefunded
from iaas.hosting import services as hosting
from tests.factories import UserFactory, billing_consistent, record_charges

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(db):
    return UserFactory(username="fin", is_staff=True)


@pytest.fixture
def charge(catalog, customer, wallet, deliver) -> SettledCharge:
    hosting.subscription_create(
        owner_id=customer.id, wallet_id=wallet.id, domain="r.example", plan_id="web-starter"
    )
    deliver()
    return SettledCharge.objects.get(wallet=wallet)


@pytest.fixture
def grouped(customer, wallet, deliver) -> list[SettledCharge]:
    """Three days of a server's usage (0.96, 0.96, 0.40) settled by one cloud entry."""
    record_charges(wallet, [96, 96, 40])
    deliver()
    return list(SettledCharge.objects.filter(wallet=wallet).order_by("transaction_date"))


def test_a_full_refund_credits_the_charge_back(charge, wallet, operator, published, assert_invariants):
    refund = services.charge_refund(charge_id=charge.pk, reason="site never worked", operator_id=operator.id)
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
    assert entry.reference == f"refund:{charge.charge_id}"
    assert "site never worked" in entry.description
    [told] = [e for e in published if isinstance(e, ChargeRefunded)]
    assert (told.charge_id, told.context, told.amount) == (charge.charge_id, "hosting", 399)
    assert_invariants()


def test_a_partial_refund_then_no_second_one(charge, wallet, operator, assert_invariants):
    services.charge_refund(charge_id=charge.pk, amount=100, reason="downtime", operator_id=operator.id)
    with pytest.raises(RefundRefused, match="refunded already"):
        services.charge_refund(charge_id=charge.pk, amount=100, reason="again", operator_id=operator.id)
    wallet.refresh_from_db()
    assert wallet.balance == 10_000 - 399 + 100
    assert Refund.objects.count() == 1
    assert_invariants()


def test_each_charge_of_a_grouped_entry_is_refunded_on_its_own(grouped, wallet, operator):
    first, second, third = grouped
    assert first.ledger_entry_id == second.ledger_entry_id == third.ledger_entry_id
    # At most the charge's amount, even though its entry booked more.
    with pytest.raises(RefundRefused, match=r"exceeds the charge of 0\.40 EUR"):
        services.charge_refund(charge_id=third.pk, amount=41, reason="outage", operator_id=operator.id)
    services.charge_refund(charge_id=second.pk, reason="outage", operator_id=operator.id)
    services.charge_refund(charge_id=third.pk, amount=40, reason="outage", operator_id=operator.id)
    with pytest.raises(RefundRefused, match="refunded already"):
        services.charge_refund(charge_id=second.pk, amount=1, reason="again", operator_id=operator.id)
    assert sorted(r.charge_id for r in Refund.objects.all()) == sorted([second.pk, third.pk])
    wallet.refresh_from_db()
    assert wallet.balance == 10_000 - 232 + 96 + 40
    billing_consistent()


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
        services.charge_refund(charge_id=charge.pk, amount=amount, reason=reason, operator_id=operator.id)
    assert LedgerEntry.objects.count() == entries
    assert not Refund.objects.exists()


def test_only_a_settled_charge_can_be_refunded(charge, wallet, operator):
    top_up = LedgerEntry.objects.get(wallet=wallet, kind="top_up")
    charge_entry = charge.ledger_entry
    for not_a_charge in (top_up.id, charge_entry.id, uuid.uuid4()):
        with pytest.raises(NotFound):
            services.charge_refund(charge_id=not_a_charge, reason="no", operator_id=operator.id)
    assert not Refund.objects.exists()


def test_refunds_are_append_only(charge, operator):
    refund = services.charge_refund(charge_id=charge.pk, reason="x", operator_id=operator.id)
    with (
        pytest.raises(IntegrityError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE billing_refund SET amount = 1 WHERE id = %s", [refund.id])


def test_reconcile_reports_a_refund_larger_than_its_charge(grouped, wallet, operator):
    refund = services.charge_refund(charge_id=grouped[1].pk, reason="x", operator_id=operator.id)
    billing_consistent()
    with transaction.atomic(), connection.cursor() as cursor:
        # Plant the drift past the trigger, as a superuser with replication role could: the
        # refund of 0.96 (its entry agrees) now names a charge of 0.40 of the same entry.
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("UPDATE billing_refund SET charge_id = %s WHERE id = %s", [grouped[2].pk, refund.id])
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
    found = billing.check_invariants()
    [violation] = found["I5"]
    assert violation.wallet_id == wallet.id
    assert "does not match the charge" in violation.detail
    assert (violation.expected["at most"], violation.found["refunded"]) == (40, 96)
