"""Automatic top-ups under real concurrency: never two in flight for one wallet, never
inside the spend's transaction. Threads each hold their own PostgreSQL connection and
start at one barrier (tests.threads)."""

from __future__ import annotations

import uuid

import pytest

from iaas.billing.models import LedgerEntry, TopUp, Wallet
from iaas.billing.payments import auto, methods
from iaas.cloud import services as cloud
from iaas.cloud.models import ServerPlan
from iaas.contracts import bus
from iaas.contracts.models import OutboxMessage
from tests.billing.payment_doubles import script_provider
from tests.factories import UserFactory, funded_wallet
from tests.threads import run_at_once

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

PRICE = 300


@pytest.fixture
def card_wallet(catalog, settings):
    """A customer's wallet of 10.00 with a saved card and an automatic top-up of 20.00 below
    5.00, a plan at 3.00 an hour (two purchases take it from 10.00 to 4.00), and a
    provider that records each call (how deep in transactions it was made)."""
    ServerPlan.objects.create(
        id="test-300",
        name="Test",
        vcpus=1,
        memory_mb=1024,
        disk_gb=10,
        price_per_hour=PRICE,
        monthly_cap=PRICE * 800,
    )
    script = script_provider(settings)
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=1_000)
    card = methods.payment_method_start(owner_id=customer.id).method
    auto.auto_top_up_set(
        wallet_id=wallet.id, owner_id=customer.id, threshold=500, amount=2_000, payment_method_id=card.id
    )
    return wallet, script


def buy(wallet):
    return lambda: cloud.server_create(
        owner_id=wallet.owner_id, wallet_id=wallet.id, name=f"s-{uuid.uuid4().hex[:8]}", plan_id="test-300"
    )


def values(outcomes) -> list:
    for outcome in outcomes:
        assert outcome.error is None, repr(outcome.error)
    return [outcome.value for outcome in outcomes]


def credits(top_up: TopUp) -> int:
    return LedgerEntry.objects.filter(kind="top_up", reference=f"top-up:{top_up.id}").count()


def test_two_spends_then_two_runners_make_one_automatic_top_up_credited_once(card_wallet, assert_invariants):
    wallet, script = card_wallet
    values(run_at_once(buy(wallet), buy(wallet)))
    wallet.refresh_from_db()
    assert wallet.available == 400  # both sold: 10.00 - 2 x 3.00
    # One of the two crossed the threshold, and it only asked: nothing was charged inside
    # either purchase's transaction.
    assert OutboxMessage.objects.filter(event_type="AutoTopUpDue").count() == 1
    assert not TopUp.objects.filter(origin="auto").exists()
    assert script.of("charge_saved") == []

    bus.deliver_pending()
    summaries = values(run_at_once(auto.auto_top_ups_run, auto.auto_top_ups_run))

    assert sorted(s["claimed"] for s in summaries) == [0, 1]
    assert sum(s["credited"] for s in summaries) == 1
    [top_up] = TopUp.objects.filter(origin="auto")
    assert (top_up.status, top_up.amount) == ("succeeded", 2_000)
    [charge] = script.of("charge_saved")  # one payment at the provider
    assert charge.subject == top_up.id
    assert script.inside_a_transaction() == []
    assert credits(top_up) == 1
    wallet.refresh_from_db()
    assert wallet.available == 2_400
    assert_invariants()


def test_two_attempts_whose_claims_both_lapsed_still_make_one_top_up(card_wallet, assert_invariants):
    """Past the runner's claim (a lease that expired under a slow provider): the wallet's
    lock and the one-in-flight constraint. The second attempt resumes the first's top-up
    (the provider's idempotency key is its id) or finds nothing left to do."""
    wallet, script = card_wallet
    values(run_at_once(buy(wallet), buy(wallet)))
    bus.deliver_pending()

    outcomes = values(
        run_at_once(
            lambda: auto.auto_top_up_attempt(wallet_id=wallet.id),
            lambda: auto.auto_top_up_attempt(wallet_id=wallet.id),
        )
    )

    assert "credited" in outcomes
    assert set(outcomes) <= {"credited", "not_needed"}
    [top_up] = TopUp.objects.filter(origin="auto")
    assert top_up.status == "succeeded"
    assert {call.subject for call in script.of("charge_saved")} == {top_up.id}
    assert credits(top_up) == 1
    assert Wallet.objects.get(pk=wallet.pk).available == 2_400
    assert_invariants()
