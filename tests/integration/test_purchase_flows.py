"""Cross-context flows: purchase, settlement, release and top-up, with the ledger and
holds checked afterwards (I1 to I5, I9)."""

import datetime

import pytest

from iaas.billing.models import Hold, LedgerEntry, Reservation, Wallet
from iaas.cloud import services as cloud
from iaas.cloud.models import Allowance as CloudAllowance
from iaas.cloud.models import Charge as CloudCharge
from iaas.cloud.models import Server, ServerPlan
from iaas.contracts.errors import (
    CurrencyMismatch,
    DomainTaken,
    InsufficientFunds,
    NotFound,
    WalletNotActive,
    WalletNotFound,
)
from iaas.contracts.models import OutboxMessage
from iaas.hosting import services as hosting
from iaas.hosting.models import Allowance as HostingAllowance
from iaas.hosting.models import Subscription
from iaas.operations.wallet_status import wallet_status_change
from tests.factories import funded_wallet

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=["folded", "portable"])
def _writes(request, settings):
    """Every flow here runs both ways a purchase writes: folded into few statements
    (PostgreSQL) and one write per statement (the embedded SQLite default's way), so
    the two are held to the same results."""
    settings.IAAS_FOLD_STATEMENTS = request.param == "folded"


def buy_server(customer, wallet, plan="s-2vcpu-4gb", name="web-1"):
    return cloud.server_create(owner_id=customer.id, wallet_id=wallet.id, name=name, plan_id=plan)


def buy_hosting(customer, wallet, domain="example.com", plan="web-starter"):
    return hosting.subscription_create(owner_id=customer.id, wallet_id=wallet.id, domain=domain, plan_id=plan)


def test_buying_a_server_charges_its_first_hour_then_settles(
    catalog, customer, wallet, deliver, assert_invariants
):
    server = buy_server(customer, wallet)
    assert server.status == "active"
    assert server.paid_until - server.created_at >= datetime.timedelta(minutes=59)
    wallet.refresh_from_db()
    # Reserved until Billing settles the charge.
    assert (wallet.balance, wallet.reserved) == (10_000, 4)
    charge = CloudCharge.objects.get(subject_id=server.id)
    assert charge.amount == 4
    assert_invariants()

    deliver()
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (9_996, 0)
    entry = LedgerEntry.objects.get(wallet=wallet, kind="charge")
    assert (entry.amount, entry.context, entry.source_id) == (-4, "cloud", charge.id)
    assert entry.transaction_date == charge.transaction_date
    assert Hold.objects.get(wallet=wallet, context="cloud").amount == 0
    assert Reservation.objects.get(kind="capture", source_id=charge.id).ledger_entry == entry
    assert_invariants()


def test_buying_hosting_charges_the_first_month(catalog, customer, wallet, deliver, assert_invariants):
    subscription = buy_hosting(customer, wallet, domain="Shop.Example.COM")
    assert subscription.domain == "shop.example.com"
    assert subscription.current_period_end.month != subscription.created_at.month or (
        subscription.current_period_end.year != subscription.created_at.year
    )
    deliver()
    wallet.refresh_from_db()
    assert wallet.balance == 10_000 - 399
    assert_invariants()


def test_a_purchase_the_wallet_cannot_pay_creates_nothing(catalog, customer, deliver, assert_invariants):
    wallet = funded_wallet(customer, amount=398)
    with pytest.raises(InsufficientFunds):
        buy_hosting(customer, wallet)
    assert not Subscription.objects.exists()
    assert not OutboxMessage.objects.filter(event_type="ChargeRecorded").exists()
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (398, 0)
    assert_invariants()


def test_the_whole_balance_can_be_spent_in_any_mix_of_contexts(catalog, customer, deliver, assert_invariants):
    wallet = funded_wallet(customer, amount=399 + 16)
    buy_hosting(customer, wallet)
    buy_server(customer, wallet, plan="s-8vcpu-16gb")
    with pytest.raises(InsufficientFunds):
        buy_server(customer, wallet, plan="s-1vcpu-1gb", name="one-more")
    deliver()
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (0, 0)
    assert_invariants()


def test_a_purchase_naming_another_customers_wallet_is_refused_even_with_allowance_held(
    catalog, customer, other_customer, settings, assert_invariants
):
    settings.IAAS_RESERVE_AHEAD = {"cloud": 1_000, "hosting": 0}
    wallet = funded_wallet(customer, amount=5_000)
    buy_server(customer, wallet)  # Cloud now holds allowance for the wallet
    assert CloudAllowance.objects.get(pk=wallet.id).amount == 1_000 - 4
    with pytest.raises(WalletNotFound):
        buy_server(other_customer, wallet, name="stolen")
    assert Server.objects.filter(owner=other_customer).count() == 0
    assert CloudAllowance.objects.get(pk=wallet.id).amount == 996
    assert_invariants()


def test_a_price_in_another_currency_is_refused_even_with_allowance_held(catalog, customer, settings):
    settings.IAAS_RESERVE_AHEAD = {"cloud": 1_000, "hosting": 0}
    usd = funded_wallet(customer, amount=5_000, currency="USD")
    with pytest.raises(CurrencyMismatch):
        buy_server(customer, usd)
    # And with an allowance row present (created for the USD wallet), still refused.
    CloudAllowance.objects.create(wallet_id=usd.id, owner=customer, currency="USD")
    with pytest.raises(CurrencyMismatch):
        buy_server(customer, usd)
    assert not Server.objects.exists()


def test_an_unknown_wallet_or_plan_is_refused(catalog, customer, wallet):
    import uuid

    with pytest.raises(WalletNotFound):
        cloud.server_create(owner_id=customer.id, wallet_id=uuid.uuid4(), name="x", plan_id="s-1vcpu-1gb")
    with pytest.raises(NotFound):
        buy_server(customer, wallet, plan="no-such-plan")
    assert not Server.objects.exists()


@pytest.mark.parametrize(
    ("refusal", "error", "chunk"),
    [
        ("another customer's wallet", WalletNotFound, 0),
        ("another customer's wallet", WalletNotFound, 1_000),
        ("short of money", InsufficientFunds, 0),
        ("short of money", InsufficientFunds, 1_000),
        # Without a chunk the purchase must reserve, so Billing's status check refuses it;
        # with one, only the allowance's block can (the freeze sets it first).
        ("wallet frozen, allowance not yet blocked", WalletNotActive, 0),
        ("wallet frozen, allowance blocked", WalletNotActive, 0),
        ("wallet frozen, allowance blocked", WalletNotActive, 1_000),
    ],
)
def test_each_refusal_of_a_purchase_creates_nothing(
    catalog, customer, other_customer, settings, refusal, error, chunk, assert_invariants
):
    settings.IAAS_RESERVE_AHEAD = {"cloud": chunk, "hosting": 0}
    # Short of money: the wallet pays the first server (4) and nothing more.
    wallet = funded_wallet(customer, amount=4 if refusal == "short of money" else 2_000)
    buy_server(customer, wallet, name="first")  # the allowance row exists (holding 996 with a chunk)
    buyer = other_customer if refusal == "another customer's wallet" else customer
    if refusal == "wallet frozen, allowance not yet blocked":
        # Reaches Billing's status check: the allowance cannot stop it without a chunk.
        Wallet.objects.filter(pk=wallet.pk).update(status=Wallet.Status.FROZEN)
    elif refusal == "wallet frozen, allowance blocked":
        wallet_status_change(wallet_id=wallet.id, status=Wallet.Status.FROZEN)
    before = CloudAllowance.objects.values("amount", "charged_total").get(pk=wallet.id)
    with pytest.raises(error):
        buy_server(buyer, wallet, name="second")
    assert list(Server.objects.values_list("name", flat=True)) == ["first"]
    assert CloudAllowance.objects.values("amount", "charged_total").get(pk=wallet.id) == before
    assert CloudCharge.objects.count() == 1


def test_a_retired_plan_is_not_sold(catalog, customer, wallet):
    ServerPlan.objects.filter(pk="s-2vcpu-4gb").update(is_active=False)
    with pytest.raises(NotFound, match="No such plan"):
        buy_server(customer, wallet)
    assert not Server.objects.exists()
    assert not CloudAllowance.objects.exists()


def test_a_live_domain_cannot_be_bought_twice_but_a_cancelled_one_frees_it(catalog, customer, wallet):
    first = buy_hosting(customer, wallet, domain="taken.example")
    with pytest.raises(DomainTaken):
        buy_hosting(customer, wallet, domain="TAKEN.example")
    hosting.subscription_cancel(subscription_id=first.id, owner_id=customer.id)
    assert buy_hosting(customer, wallet, domain="taken.example").status == "active"


def test_releasing_allowance_returns_it_to_the_wallet(
    catalog, customer, settings, deliver, assert_invariants
):
    settings.IAAS_RESERVE_AHEAD = {"cloud": 0, "hosting": 2_000}
    wallet = funded_wallet(customer, amount=5_000)
    buy_hosting(customer, wallet)
    deliver()
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (5_000 - 399, 2_000 - 399)

    release = hosting.allowance_release(wallet_id=wallet.id, reason="customer withdrew")
    assert release.amount == 1_601
    assert HostingAllowance.objects.get(pk=wallet.id).amount == 0
    assert_invariants()  # pending release accounted for
    deliver()
    wallet.refresh_from_db()
    assert wallet.reserved == 0
    assert hosting.allowance_release(wallet_id=wallet.id, reason="again") is None
    assert_invariants()


@pytest.mark.django_db(transaction=True)
def test_a_refused_reservation_makes_other_contexts_release_idle_allowance(
    catalog, customer, settings, deliver, assert_invariants
):
    settings.IAAS_RESERVE_AHEAD = {"cloud": 5_000, "hosting": 0}
    wallet = funded_wallet(customer, amount=5_000)
    buy_server(customer, wallet)  # Cloud reserves the whole wallet ahead
    deliver()
    with pytest.raises(InsufficientFunds) as refusal:
        buy_hosting(customer, wallet)
    assert refusal.value.release_requested
    assert OutboxMessage.objects.filter(event_type="ReleaseRequested", status="pending").exists()
    deliver()  # Cloud releases; Billing applies the release
    buy_hosting(customer, wallet)  # the retry succeeds
    deliver()
    wallet.refresh_from_db()
    assert wallet.balance == 5_000 - 4 - 399
    assert_invariants()


def test_settlement_and_release_are_applied_once(catalog, customer, wallet, deliver, assert_invariants):
    from iaas.billing import services as billing

    server = buy_server(customer, wallet)
    charge = CloudCharge.objects.get(subject_id=server.id)
    deliver()
    for _ in range(2):
        again = billing.charge_settle(
            charge_id=charge.id,
            wallet_id=wallet.id,
            context="cloud",
            amount=charge.amount,
            currency="EUR",
            transaction_date=charge.transaction_date,
            description="again",
        )
        assert again is None
    wallet.refresh_from_db()
    assert wallet.balance == 10_000 - 4
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    assert_invariants()


def test_terminating_a_server_stops_it_without_refund(catalog, customer, wallet, deliver):
    server = buy_server(customer, wallet)
    terminated = cloud.server_terminate(server_id=server.id, owner_id=customer.id)
    assert terminated.status == "terminated"
    assert cloud.server_terminate(server_id=server.id, owner_id=customer.id).status == "terminated"
    deliver()
    wallet.refresh_from_db()
    assert wallet.balance == 10_000 - 4


def test_another_customer_cannot_terminate_or_cancel(catalog, customer, other_customer, wallet):
    server = buy_server(customer, wallet)
    subscription = buy_hosting(customer, wallet)
    with pytest.raises(NotFound):
        cloud.server_terminate(server_id=server.id, owner_id=other_customer.id)
    with pytest.raises(NotFound):
        hosting.subscription_cancel(subscription_id=subscription.id, owner_id=other_customer.id)


@pytest.mark.django_db(transaction=True)
def test_spending_outside_a_transaction_is_refused(catalog, customer):
    from iaas.cloud.spending import spender
    from iaas.contracts.types import Money

    wallet = funded_wallet(customer, amount=100)
    with pytest.raises(RuntimeError, match="inside the purchase's transaction"):
        spender.spend(
            wallet_id=wallet.id,
            owner_id=customer.id,
            price=Money(1, "EUR"),
            description="x",
            subject_id=wallet.id,
            period_start=wallet.created_at,
            period_end=wallet.created_at,
        )
