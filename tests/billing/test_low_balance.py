"""The low-balance alert: a wallet's owner sets a threshold (minor units, None: off), and
Billing publishes LowBalanceReached once each time the available balance (balance -
reserved) goes from at or above it to below it, under the wallet lock, on every path that
makes available drop (a reserve, one by one or in a batch; an operator's debit). It is
armed again by the available balance being back at or above the threshold, whatever put
it there, and by a new threshold. The purchase path pays no statement for it."""

from __future__ import annotations

import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from iaas.api.representation import as_shown
from iaas.billing import batch, services
from iaas.billing.api.serializers import WalletSerializer
from iaas.billing.models import Wallet
from iaas.cloud import services as cloud_services
from iaas.contracts.billing import Grant, ReserveRequest
from iaas.contracts.errors import InsufficientFunds, WalletNotFound
from iaas.contracts.events import LowBalanceReached
from iaas.contracts.models import OutboxMessage
from tests.factories import UserFactory, billing_consistent, funded_wallet

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(db):
    return UserFactory(username="finance", is_staff=True)


def alerts(published) -> list[LowBalanceReached]:
    return [event for event in published if isinstance(event, LowBalanceReached)]


def set_threshold(wallet, threshold):
    return services.wallet_low_balance_threshold_set(
        wallet_id=wallet.id, owner_id=wallet.owner_id, threshold=threshold
    )


def reserve(wallet, amount, *, context="cloud", minimum=None):
    with transaction.atomic():
        return services.funds_reserve(
            wallet_id=wallet.id,
            owner_id=wallet.owner_id,
            context=context,
            currency=wallet.currency,
            amount=amount,
            minimum=minimum or amount,
        )


def shown(wallet) -> dict:
    """The wallet as GET /api/v1/wallets/{id}/ shows it now."""
    return as_shown(WalletSerializer, Wallet.objects.get(pk=wallet.pk))


# --- Setting it -----------------------------------------------------------------------------


def test_a_wallet_has_no_threshold_until_its_owner_sets_one(wallet, published):
    assert wallet.low_balance_threshold is None
    reserve(wallet, 9_999)
    assert alerts(published) == []


def test_the_owner_sets_and_clears_the_threshold(wallet):
    assert set_threshold(wallet, 2_000).low_balance_threshold == 2_000
    wallet.refresh_from_db()
    assert wallet.low_balance_threshold == 2_000
    assert set_threshold(wallet, None).low_balance_threshold is None
    wallet.refresh_from_db()
    assert wallet.low_balance_threshold is None


@pytest.mark.parametrize("threshold", [-1, 100_000_001, 10.0, "10", True, False])
def test_a_threshold_is_a_whole_number_of_minor_units_within_the_top_up_limit(wallet, threshold):
    with pytest.raises(ValueError, match="low-balance threshold"):
        set_threshold(wallet, threshold)
    wallet.refresh_from_db()
    assert wallet.low_balance_threshold is None


def test_the_limit_is_the_top_up_limit_setting(wallet, settings):
    settings.IAAS_MAX_TOP_UP = 5_000
    assert set_threshold(wallet, 5_000).low_balance_threshold == 5_000
    with pytest.raises(ValueError, match="low-balance threshold"):
        set_threshold(wallet, 5_001)


def test_another_customers_wallet_is_not_found(wallet, other_customer):
    with pytest.raises(WalletNotFound):
        services.wallet_low_balance_threshold_set(
            wallet_id=wallet.id, owner_id=other_customer.id, threshold=100
        )
    wallet.refresh_from_db()
    assert wallet.low_balance_threshold is None


def test_the_database_refuses_a_negative_threshold(wallet):
    with (
        pytest.raises(IntegrityError, match="wallet_low_balance_threshold_not_negative"),
        transaction.atomic(),
    ):
        Wallet.objects.filter(pk=wallet.pk).update(low_balance_threshold=-1)


def test_setting_a_threshold_alerts_nothing_only_money_crossing_it_does(wallet, published):
    reserve(wallet, 7_000)  # 3,000 available
    for threshold in (5_000, 6_000, 5_000, None, 5_000):  # back and forth: no flood of alerts
        set_threshold(wallet, threshold)
    reserve(wallet, 1_000)  # still below (3,000 to 2,000): no crossing
    assert alerts(published) == []

    services.top_up_create(wallet_id=wallet.id, owner_id=wallet.owner_id, amount=4_000)  # 6,000: above again
    reserve(wallet, 2_000)  # 4,000: crossed below 5,000
    [alert] = alerts(published)
    assert (alert.wallet_id, alert.owner_id, alert.currency) == (wallet.id, wallet.owner_id, "EUR")
    assert (alert.available, alert.threshold) == (4_000, 5_000)
    assert alert.resource == shown(wallet)
    assert alert.resource["low_balance_threshold"] == 5_000


def test_a_threshold_set_at_or_below_what_is_available_does_not_alert(wallet, published):
    set_threshold(wallet, 10_000)  # exactly what is available: not below it
    set_threshold(wallet, 500)
    assert alerts(published) == []


# --- Crossing it ------------------------------------------------------------------------------


@pytest.mark.parametrize("folded", [True, False], ids=["folded", "portable"])
def test_reserves_below_the_threshold_alert_once(settings, wallet, published, folded):
    settings.IAAS_FOLD_STATEMENTS = folded
    set_threshold(wallet, 5_000)
    reserve(wallet, 4_000)  # 6,000 available: above
    reserve(wallet, 1_000)  # 5,000: at the threshold is not below it
    assert alerts(published) == []
    reserve(wallet, 1)  # 4,999: crossed
    [alert] = alerts(published)
    assert (alert.available, alert.threshold, alert.owner_id) == (4_999, 5_000, wallet.owner_id)
    assert alert.resource == shown(wallet)
    assert (alert.resource["available"], alert.resource["reserved"]) == (4_999, 5_001)
    reserve(wallet, 2_000)
    reserve(wallet, 2_999)  # down to nothing: still the one crossing
    assert len(alerts(published)) == 1
    assert (
        OutboxMessage.objects.filter(event_type="LowBalanceReached").values("event_id").distinct().count()
        == 1
    )
    billing_consistent()


@pytest.mark.parametrize("folded", [True, False], ids=["folded", "portable"])
def test_a_grant_of_less_than_asked_that_crosses_alerts_with_what_is_left(
    settings, wallet, published, folded
):
    settings.IAAS_FOLD_STATEMENTS = folded
    set_threshold(wallet, 1_000)
    reserve(wallet, 20_000, minimum=1)  # grants all 10,000
    [alert] = alerts(published)
    assert (alert.available, alert.resource["available"], alert.resource["reserved"]) == (0, 0, 10_000)


def test_a_top_up_back_above_the_threshold_arms_it_again(wallet, published):
    set_threshold(wallet, 5_000)
    reserve(wallet, 6_000)  # 4,000: first crossing
    services.top_up_create(wallet_id=wallet.id, owner_id=wallet.owner_id, amount=500)  # 4,500: still below
    reserve(wallet, 100)
    assert len(alerts(published)) == 1
    services.top_up_create(wallet_id=wallet.id, owner_id=wallet.owner_id, amount=3_000)  # 7,400
    reserve(wallet, 2_500)  # 4,900: the second crossing
    assert [a.available for a in alerts(published)] == [4_000, 4_900]


def test_a_release_back_above_the_threshold_arms_it_again(wallet, published):
    set_threshold(wallet, 5_000)
    reserve(wallet, 6_000)  # 4,000
    services.allowance_release_apply(
        release_id=uuid.uuid4(), wallet_id=wallet.id, context="cloud", amount=6_000
    )
    reserve(wallet, 5_500)  # 4,500
    assert [a.available for a in alerts(published)] == [4_000, 4_500]


def test_an_operators_debit_that_crosses_alerts_and_a_credit_arms_it_again(wallet, operator, published):
    set_threshold(wallet, 5_000)
    debit = {"wallet_id": wallet.id, "reason": "chargeback", "operator_id": operator.id}
    services.wallet_adjust(amount=-4_000, **debit)  # 6,000
    services.wallet_adjust(amount=-2_000, **debit)  # 4,000: crossed
    services.wallet_adjust(amount=-1_000, **debit)  # 3,000
    [alert] = alerts(published)
    assert (alert.available, alert.resource["balance"], alert.resource["available"]) == (4_000, 4_000, 4_000)
    services.wallet_adjust(amount=3_000, **debit)  # 6,000: armed again
    services.wallet_adjust(amount=-1_001, **debit)  # 4,999
    assert [a.available for a in alerts(published)] == [4_000, 4_999]
    billing_consistent()


def test_a_refused_reserve_alerts_nothing(wallet, published):
    set_threshold(wallet, 5_000)
    with pytest.raises(InsufficientFunds):
        reserve(wallet, 10_001)
    assert alerts(published) == []


def test_a_cleared_threshold_alerts_nothing(wallet, published):
    set_threshold(wallet, 5_000)
    set_threshold(wallet, None)
    reserve(wallet, 9_000)
    assert alerts(published) == []


# --- The batch reserve -------------------------------------------------------------------------


def reserve_batch(*wallets_and_amounts):
    with transaction.atomic():
        return batch.funds_reserve_batch(
            context="cloud",
            requests=[
                ReserveRequest(
                    wallet_id=wallet.id,
                    owner_id=wallet.owner_id,
                    currency=wallet.currency,
                    amount=amount,
                    minimum=amount,
                )
                for wallet, amount in wallets_and_amounts
            ],
        )


def test_a_batch_reserve_alerts_each_wallet_that_crosses_once(published):
    crossing, staying, unset = (funded_wallet(amount=10_000) for _ in range(3))
    set_threshold(crossing, 5_000)
    set_threshold(staying, 1_000)
    answers = reserve_batch((crossing, 6_000), (staying, 6_000), (unset, 9_500))
    assert all(isinstance(answer, Grant) for answer in answers.values())
    [alert] = alerts(published)
    assert (alert.wallet_id, alert.owner_id, alert.available, alert.threshold) == (
        crossing.id,
        crossing.owner_id,
        4_000,
        5_000,
    )
    assert alert.resource == shown(crossing)
    reserve_batch((crossing, 1_000), (staying, 3_500))  # 3,000 still below; 500 crosses
    assert [(a.wallet_id, a.available) for a in alerts(published)] == [
        (crossing.id, 4_000),
        (staying.id, 500),
    ]
    billing_consistent()


def test_a_batch_reserve_and_a_single_one_see_the_same_crossing(published):
    wallet = funded_wallet(amount=10_000)
    set_threshold(wallet, 5_000)
    reserve(wallet, 4_000)
    reserve_batch((wallet, 2_000))  # 4,000: crossed in the batch
    reserve(wallet, 1_000)  # and not again one by one
    assert [a.available for a in alerts(published)] == [4_000]


def test_a_batch_reserve_that_crosses_makes_no_more_statements(published):
    """The alerts' outbox rows go in FundsReserved's one INSERT; the wallets' lock reads
    the columns the alert shows."""
    quiet, crossing = funded_wallet(amount=10_000), funded_wallet(amount=10_000)
    set_threshold(crossing, 5_000)

    def statements_of(wallet) -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            reserve_batch((wallet, 6_000))
        return [q["sql"] for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]

    assert len(statements_of(crossing)) == len(statements_of(quiet))
    assert [a.wallet_id for a in alerts(published)] == [crossing.id]


# --- What it costs the purchase path -------------------------------------------------------------


def reserve_statements(wallet, amount) -> list[str]:
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        services.funds_reserve(
            wallet_id=wallet.id,
            owner_id=wallet.owner_id,
            context="cloud",
            currency="EUR",
            amount=amount,
            minimum=amount,
        )
    return [q["sql"] for q in captured.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]


def test_a_reserve_makes_two_statements_whether_or_not_it_crosses(wallet, published):
    set_threshold(wallet, 5_000)
    assert len(reserve_statements(wallet, 4_000)) == 2  # above
    crossing = reserve_statements(wallet, 2_000)
    assert len(crossing) == 2, "\n".join(crossing)
    assert crossing[0].startswith("WITH locked AS (SELECT id, balance - reserved")
    # the alert's outbox row goes with FundsReserved's, in the statement that grows the hold
    assert "contracts_outboxmessage" in crossing[1]
    assert len(alerts(published)) == 1
    assert len(reserve_statements(wallet, 1_000)) == 2  # below


@pytest.mark.django_db(transaction=True)
def test_a_purchase_that_crosses_the_threshold_still_makes_six_statements(catalog):
    """As tests/integration/test_query_counts.py measures a purchase: the outermost
    transaction, no savepoints."""
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=1_000)

    def buy():
        cloud_services.server_create(
            owner_id=customer.id, wallet_id=wallet.id, name="vm", plan_id="s-2vcpu-4gb"
        )

    buy()  # the allowance row exists from now on
    wallet.refresh_from_db()
    set_threshold(wallet, wallet.available)  # the next purchase crosses it
    with CaptureQueriesContext(connection) as captured:
        buy()
    sql = [q["sql"] for q in captured.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
    assert len(sql) == 6, "\n".join(sql)
    [row] = OutboxMessage.objects.filter(event_type="LowBalanceReached")
    wallet.refresh_from_db()
    assert row.payload["available"] == wallet.available < row.payload["threshold"]
