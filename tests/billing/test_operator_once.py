"""An operator's adjustment or refund is booked once per operation id (the admin form's
one-time token), and a debit refused because the services hold money asks them for
their idle allowance back once the refusal rolled back, so that a retry succeeds."""

from __future__ import annotations

import uuid

import pytest
from django.db import transaction

from iaas.billing import services
from iaas.billing.models import Adjustment, LedgerEntry, Refund, SettledCharge
from iaas.cloud import services as cloud_services
from iaas.cloud.models import Allowance as CloudAllowance
from iaas.common.db import retry_transaction, run_after_rollback
from iaas.contracts.errors import AdjustmentRefused
from iaas.contracts.models import OutboxMessage
from iaas.hosting import services as hosting_services
from tests.factories import UserFactory, funded_wallet
from tests.threads import run_at_once


@pytest.fixture
def operator(db):
    return UserFactory(username="fin", is_staff=True)


# --- Once per operation id -----------------------------------------------------------------


@pytest.mark.django_db
def test_an_adjustment_with_a_booked_id_books_nothing_again(wallet, operator, assert_invariants):
    operation = uuid.uuid4()
    first = services.wallet_adjust(
        wallet_id=wallet.id, amount=500, reason="goodwill", operator_id=operator.id, adjustment_id=operation
    )
    assert first.pk == operation
    assert first.ledger_entry.reference == f"adjustment:{operation}"
    entries = LedgerEntry.objects.count()

    with pytest.raises(services.AlreadyBooked) as repeat:
        services.wallet_adjust(
            wallet_id=wallet.id,
            amount=500,
            reason="goodwill",
            operator_id=operator.id,
            adjustment_id=operation,
        )

    assert repeat.value.booked == first
    assert LedgerEntry.objects.count() == entries
    wallet.refresh_from_db()
    assert wallet.balance == 10_500
    assert_invariants()


@pytest.mark.django_db
def test_an_adjustment_id_is_booked_on_one_wallet_only(wallet, operator, customer):
    operation = uuid.uuid4()
    services.wallet_adjust(
        wallet_id=wallet.id, amount=500, reason="goodwill", operator_id=operator.id, adjustment_id=operation
    )
    other = funded_wallet(UserFactory(), amount=100)
    with pytest.raises(services.AlreadyBooked):
        services.wallet_adjust(
            wallet_id=other.id,
            amount=500,
            reason="goodwill",
            operator_id=operator.id,
            adjustment_id=operation,
        )
    other.refresh_from_db()
    assert other.balance == 100


@pytest.mark.django_db
def test_a_refund_with_a_booked_id_books_nothing_again(catalog, customer, wallet, operator, deliver):
    hosting_services.subscription_create(
        owner_id=customer.id, wallet_id=wallet.id, domain="r.example", plan_id="web-starter"
    )
    deliver()
    charge = SettledCharge.objects.get(wallet=wallet)
    operation = uuid.uuid4()
    first = services.charge_refund(
        charge_id=charge.pk, reason="downtime", operator_id=operator.id, amount=100, refund_id=operation
    )
    assert first.pk == operation

    with pytest.raises(services.AlreadyBooked) as repeat:
        services.charge_refund(
            charge_id=charge.pk,
            reason="downtime",
            operator_id=operator.id,
            amount=100,
            refund_id=operation,
        )

    assert repeat.value.booked == first
    assert Refund.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="refund").count() == 1


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("same_wallet", [True, False], ids=["same-wallet", "other-wallet"])
def test_two_submissions_at_once_book_once(same_wallet):
    """A double click: both requests run at the same instant. The second waits for the
    first's wallet lock (same wallet) or hits the unique key (another wallet: a forged
    or confused form); either way it is 'already booked', never a second entry or a 500."""
    operator = UserFactory(username="fin", is_staff=True)
    first = funded_wallet(UserFactory(), amount=1_000)
    second = first if same_wallet else funded_wallet(UserFactory(), amount=1_000)
    operation = uuid.uuid4()

    def submit(wallet):
        return lambda: retry_transaction(services.wallet_adjust)(
            wallet_id=wallet.id,
            amount=250,
            reason="goodwill",
            operator_id=operator.id,
            adjustment_id=operation,
        )

    outcomes = run_at_once(submit(first), submit(second))

    errors = [outcome.error for outcome in outcomes if outcome.error is not None]
    assert len(errors) == 1, errors
    assert isinstance(errors[0], services.AlreadyBooked), errors
    assert Adjustment.objects.filter(pk=operation).count() == 1
    assert LedgerEntry.objects.filter(kind="adjustment").count() == 1


# --- A refused debit asks for idle allowance back --------------------------------------------


@pytest.mark.django_db
def test_a_debit_refused_for_held_money_asks_for_it_back_after_the_rollback(
    catalog, customer, operator, settings, deliver, assert_invariants
):
    settings.IAAS_RESERVE_AHEAD = {"cloud": 2_000, "hosting": 0}
    wallet = funded_wallet(customer, amount=5_000)
    cloud_services.server_create(owner_id=customer.id, wallet_id=wallet.id, name="web", plan_id="s-1vcpu-1gb")
    deliver()  # the first hour settled: what Cloud holds now is idle allowance
    wallet.refresh_from_db()
    idle = CloudAllowance.objects.get(pk=wallet.pk).amount
    assert idle > 0
    assert wallet.reserved == idle
    whole_balance = wallet.balance
    requests_before = OutboxMessage.objects.filter(event_type="ReleaseRequested").count()

    # In a transaction of the caller's (the operator form's), which the refusal rolls back.
    with pytest.raises(AdjustmentRefused, match="retry in a few seconds") as refused, transaction.atomic():
        services.wallet_adjust(
            wallet_id=wallet.id, amount=-whole_balance, reason="chargeback", operator_id=operator.id
        )

    # Not published inside the refused transaction (it would have rolled back with it):
    # the refusal carries it for the transaction's owner to run after the rollback.
    assert OutboxMessage.objects.filter(event_type="ReleaseRequested").count() == requests_before
    assert refused.value.after_rollback
    run_after_rollback(refused.value)
    assert OutboxMessage.objects.filter(event_type="ReleaseRequested", status="pending").exists()

    deliver()  # Cloud answers: it releases its idle allowance, Billing applies it
    assert CloudAllowance.objects.get(pk=wallet.pk).amount == 0
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (whole_balance, 0)

    services.wallet_adjust(
        wallet_id=wallet.id, amount=-whole_balance, reason="chargeback", operator_id=operator.id
    )
    wallet.refresh_from_db()
    assert wallet.balance == 0
    assert_invariants()


@pytest.mark.django_db
def test_a_debit_beyond_the_balance_asks_for_nothing(wallet, operator):
    """Releasing held money cannot make a debit larger than the balance possible."""
    with pytest.raises(AdjustmentRefused) as refused:
        services.wallet_adjust(
            wallet_id=wallet.id, amount=-20_000, reason="chargeback", operator_id=operator.id
        )
    assert refused.value.after_rollback == []
    assert "retry" not in refused.value.detail
