"""The guarantee under real concurrency: no customer spends the same money twice.

Threads each hold their own PostgreSQL connection and start at one barrier, so the
purchases really contend for the same rows.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from io import StringIO

import pytest
from django.core.management import call_command

from iaas.billing import services as billing
from iaas.billing.models import LedgerEntry, Wallet
from iaas.cloud import services as cloud
from iaas.cloud.models import Charge as CloudCharge
from iaas.cloud.models import ServerPlan
from iaas.contracts import bus, selling
from iaas.contracts.errors import InsufficientFunds
from iaas.contracts.models import OutboxMessage
from iaas.hosting import services as hosting
from iaas.hosting.models import HostingPlan
from iaas.spending.apps import selling_context_config
from iaas.storage import services as storage
from iaas.storage.models import VolumePlan
from tests.factories import UserFactory, funded_wallet
from tests.threads import run_at_once

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

PRICE = 400


@pytest.fixture
def equal_price_plans(catalog):
    """A server hour and a hosting month at the same price, so 'affords k purchases'
    does not depend on which context wins."""
    ServerPlan.objects.create(
        id="test-400",
        name="Test",
        vcpus=1,
        memory_mb=1024,
        disk_gb=10,
        price_per_hour=PRICE,
        monthly_cap=PRICE * 800,
    )
    HostingPlan.objects.create(id="test-400", name="Test", storage_gb=1, price_per_month=PRICE)
    # 10 GB at 29,200 a GB-month: 292,000 / 730 = 400 an hour, exactly.
    VolumePlan.objects.create(
        id="test-400", name="Test", price_per_gb_month=PRICE * 73, min_size_gb=10, max_size_gb=10
    )


def buy_server(customer, wallet, plan="test-400"):
    return lambda: cloud.server_create(
        owner_id=customer.id, wallet_id=wallet.id, name=f"s-{uuid.uuid4().hex[:8]}", plan_id=plan
    )


def buy_hosting(customer, wallet, plan="test-400"):
    return lambda: hosting.subscription_create(
        owner_id=customer.id, wallet_id=wallet.id, domain=f"{uuid.uuid4().hex[:12]}.example", plan_id=plan
    )


def buy_volume(customer, wallet, plan="test-400"):
    return lambda: storage.volume_create(
        owner_id=customer.id, wallet_id=wallet.id, name=f"v-{uuid.uuid4().hex[:8]}", plan_id=plan, size_gb=10
    )


def settle_everything() -> None:
    """Deliver the charges, and close the volumes' usage into charges (spent at once, it
    is settled by the settlement run) and deliver those."""
    bus.deliver_pending()
    call_command("settle_usage", stdout=StringIO())
    bus.deliver_pending()


def assert_only_insufficient_funds(outcomes):
    errors = [o.error for o in outcomes if o.error is not None]
    unexpected = [e for e in errors if not isinstance(e, InsufficientFunds)]
    assert unexpected == [], f"a customer saw something other than insufficient_funds: {unexpected!r}"


def context_pairs() -> list[tuple[str, str]]:
    """Every pair of registered selling contexts (read at collection: the apps are ready)."""
    return list(itertools.combinations(selling.names(), 2))


@pytest.mark.parametrize(("first", "second"), context_pairs(), ids="-".join)
def test_seed_scenario_exactly_one_of_two_simultaneous_purchases_wins(
    first, second, catalog, assert_invariants
):
    """Each context's demo purchase (iaas.<context>.demo), on a wallet that affords
    either but not both, bought at the same instant: exactly one wins, round after round."""
    demos = {name: selling_context_config(name).demo_module() for name in (first, second)}
    prices = {name: demo.race_price() for name, demo in demos.items()}
    budget = max(prices.values())
    assert budget < sum(prices.values())
    winners = dict.fromkeys(demos, 0)
    for _ in range(30):
        customer = UserFactory()
        wallet = funded_wallet(customer, amount=budget)
        outcomes = run_at_once(
            *[
                functools.partial(demo.race_purchase, owner_id=customer.id, wallet_id=wallet.id)
                for demo in demos.values()
            ]
        )
        assert_only_insufficient_funds(outcomes)
        won = [name for name, outcome in zip(demos, outcomes, strict=True) if outcome.error is None]
        assert len(won) == 1, f"round won by {won}"
        winners[won[0]] += 1
        wallet.refresh_from_db()
        assert wallet.reserved <= wallet.balance
    bus.deliver_pending()
    assert_invariants()


def test_three_contexts_one_wallet_that_affords_one_purchase_sell_exactly_one(
    equal_price_plans, assert_invariants
):
    """A server's hour, a hosting month and a volume's first hour at one price, bought at
    the same instant from a wallet holding that price: one of the three wins."""
    for _ in range(20):
        customer = UserFactory()
        wallet = funded_wallet(customer, amount=PRICE)
        outcomes = run_at_once(*(make(customer, wallet) for make in (buy_server, buy_hosting, buy_volume)))
        assert_only_insufficient_funds(outcomes)
        assert sum(o.error is None for o in outcomes) == 1
    bus.deliver_pending()
    assert_invariants()


def test_hot_wallet_sells_exactly_what_it_can_pay_for(equal_price_plans, assert_invariants):
    k = 10
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=PRICE * k)
    makers = itertools.cycle([buy_server, buy_hosting, buy_volume])
    attempts = [next(makers)(customer, wallet) for _ in range(3 * k)]
    outcomes = []
    # 16 threads at a time, 3k attempts in all, with a delivery worker settling
    # charges concurrently (so the wallet row is contended by settlement too).
    for start in range(0, len(attempts), 15):
        batch = attempts[start : start + 15]
        outcomes += run_at_once(*batch, bus.deliver_pending)[:-1]
    assert_only_insufficient_funds(outcomes)
    assert sum(o.error is None for o in outcomes) == k
    settle_everything()
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (0, 0)
    assert_invariants()


def test_hot_wallet_with_reserve_ahead_never_oversells_and_releases_on_request(
    equal_price_plans, settings, assert_invariants
):
    settings.IAAS_RESERVE_AHEAD = {"cloud": PRICE * 3, "hosting": PRICE * 3, "storage": PRICE * 3}
    k = 10
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=PRICE * k)
    makers = itertools.cycle([buy_server, buy_hosting, buy_volume])
    outcomes = run_at_once(*[next(makers)(customer, wallet) for _ in range(16)])
    outcomes += run_at_once(*[next(makers)(customer, wallet) for _ in range(14)])
    assert_only_insufficient_funds(outcomes)
    sold = sum(o.error is None for o in outcomes)
    assert sold <= k
    assert_invariants()

    # Once the ReleaseRequested releases are delivered, what is left can be spent.
    bus.deliver_pending()
    for attempt in range(4 * k):
        wallet.refresh_from_db()
        if wallet.balance - wallet.reserved == 0 and sold == k:
            break
        try:
            (buy_server, buy_hosting, buy_volume)[attempt % 3](customer, wallet)()
            sold += 1
        except InsufficientFunds:
            pass
        bus.deliver_pending()
    assert sold == k
    settle_everything()
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (0, 0)
    assert_invariants()


def test_the_same_event_delivered_twice_at_once_is_applied_once(catalog, assert_invariants):
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=1_000)
    buy_server(customer, wallet, "s-2vcpu-4gb")()
    row = OutboxMessage.objects.get(event_type="ChargesRecorded")
    # In-process delivery after commit racing a deliver_events worker ...
    run_at_once(lambda: bus.deliver_messages([row.id]), bus.deliver_pending)
    # ... and the handler itself called twice at once, past the outbox's claim.
    charge = CloudCharge.objects.get()
    settle = lambda: billing.charge_settle(  # noqa: E731
        charge_id=charge.id,
        wallet_id=wallet.id,
        context="cloud",
        amount=charge.amount,
        currency="EUR",
        transaction_date=charge.transaction_date,
        description="duplicate",
    )
    outcomes = run_at_once(settle, settle)
    assert [o.error for o in outcomes] == [None, None]
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    assert Wallet.objects.get(pk=wallet.id).balance == 1_000 - 4
    assert_invariants()


def test_concurrent_top_ups_with_one_reference_credit_once(db, assert_invariants):
    customer = UserFactory()
    wallet = billing.wallet_create(owner_id=customer.id, currency="EUR")
    top_up = lambda: billing.top_up_create(  # noqa: E731
        wallet_id=wallet.id, owner_id=customer.id, amount=500, reference="transfer-7"
    )
    outcomes = run_at_once(top_up, top_up, top_up)
    assert [o.error for o in outcomes] == [None, None, None]
    assert len({o.value.id for o in outcomes}) == 1
    wallet.refresh_from_db()
    assert wallet.balance == 500
    assert_invariants()
