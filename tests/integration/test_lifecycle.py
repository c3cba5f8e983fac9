"""A service's life around suspension (ARCHITECTURE.md, "A service's life"), for servers
and subscriptions alike: each cause is lifted only by the paths allowed to lift it, the
service runs again only when no cause holds, and every path that resumes a service
charges it the same way (a period is charged once, the time it was off never)."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.db import connection

from iaas.audit.models import ChangeRecord
from iaas.billing import services as billing_services
from iaas.cloud import services as cloud
from iaas.cloud.models import Charge as ServerCharge
from iaas.cloud.models import Server, Usage
from iaas.contracts import bus, wallets
from iaas.contracts.errors import InsufficientFunds, InvalidState
from iaas.hosting import services as hosting
from iaas.hosting.models import Charge as SubscriptionCharge
from iaas.hosting.models import Subscription
from tests.batch_runs import at, charges_for, run_at
from tests.factories import UserFactory, funded_wallet

H = dt.timedelta(hours=1)
GRACE = dt.timedelta(hours=168)  # IAAS_SERVER_GRACE_HOURS' default
HOSTING_GRACE = dt.timedelta(days=7)  # IAAS_HOSTING_GRACE_DAYS' default
SERVER_PRICE = 4  # s-2vcpu-4gb, per hour
MONTH_PRICE = 399  # web-starter


def buy_server(wallet, moment, *, plan="s-2vcpu-4gb") -> Server:
    with time_machine.travel(moment, tick=False):
        server = cloud.server_create(owner_id=wallet.owner_id, wallet_id=wallet.id, name="web1", plan_id=plan)
        bus.deliver_pending()
    return server


def subscribe(wallet, moment) -> Subscription:
    with time_machine.travel(moment, tick=False):
        subscription = hosting.subscription_create(
            owner_id=wallet.owner_id, wallet_id=wallet.id, domain="example.com", plan_id="web-starter"
        )
        bus.deliver_pending()
    return subscription


def at_moment(moment, call, **kwargs):
    with time_machine.travel(moment, tick=False):
        result = call(**kwargs)
        bus.deliver_pending()
    return result


def top_up(wallet, amount=10_000) -> None:
    billing_services.top_up_create(wallet_id=wallet.id, owner_id=wallet.owner_id, amount=amount)


def unpaid_server(customer) -> Server:
    """Bought 10 May 10:00 with one hour's money; metering at 11:30 could not pay the
    hour from 11:00: suspended for ``unpaid``."""
    wallet = funded_wallet(customer, amount=SERVER_PRICE)
    server = buy_server(wallet, at(2026, 5, 10, 10))
    assert run_at(at(2026, 5, 10, 11, 30), "bill_usage")["suspended"] == 1
    server.refresh_from_db()
    assert server.suspension_causes == ["unpaid"]
    return server


def unpaid_subscription(customer) -> Subscription:
    """Bought 10 May with one month's money; the renewal on 10 June could not pay."""
    wallet = funded_wallet(customer, amount=MONTH_PRICE)
    subscription = subscribe(wallet, at(2026, 5, 10))
    assert run_at(at(2026, 6, 10, 1), "renew_subscriptions")["suspended"] == 1
    subscription.refresh_from_db()
    assert subscription.suspension_causes == ["unpaid"]
    return subscription


# --- Each cause, each path: who may lift it ---------------------------------------------------

# (the causes that hold, the path, the status and the causes after the path ran)
SERVER_CASES = [
    # The batch lifts unpaid once the wallet pays, never an operator's hold.
    ("unpaid", "batch_after_top_up", "active", []),
    ("operator", "batch_after_top_up", "suspended", ["operator"]),
    ("unpaid+operator", "batch_after_top_up", "suspended", ["unpaid", "operator"]),
    # Nothing terminates a service while an operator holds it.
    ("operator", "batch_after_grace", "suspended", ["operator"]),
    ("unpaid+operator", "batch_after_grace", "suspended", ["unpaid", "operator"]),
    ("unpaid", "batch_after_grace", "terminated", ["unpaid"]),
    # An operator's resume lifts every cause (and charges what is owed).
    ("unpaid", "operator_resume", "active", []),
    ("operator", "operator_resume", "active", []),
    ("unpaid+operator", "operator_resume", "active", []),
    # Lifting the hold lifts that cause only.
    ("operator", "operator_lifts_hold", "active", []),
    ("unpaid+operator", "operator_lifts_hold", "suspended", ["unpaid"]),
    # The customer lifts nothing; they may end the service whatever holds it.
    ("unpaid", "customer_terminates", "terminated", ["unpaid"]),
    ("operator", "customer_terminates", "terminated", ["operator"]),
]


def _server_in(kind: str, customer) -> Server:
    if kind == "operator":
        wallet = funded_wallet(customer, amount=10_000)
        server = buy_server(wallet, at(2026, 5, 10, 10))
        at_moment(at(2026, 5, 10, 10, 30), cloud.server_suspend, server_id=server.id, reason="abuse report")
    else:
        server = unpaid_server(customer)
        if kind == "unpaid+operator":
            at_moment(at(2026, 5, 10, 12), cloud.server_suspend, server_id=server.id, reason="legal hold")
    server.refresh_from_db()
    assert server.status == Server.Status.SUSPENDED
    return server


@pytest.mark.parametrize(("kind", "path", "status", "causes"), SERVER_CASES)
def test_server_causes_are_lifted_only_by_their_paths(
    customer, kind, path, status, causes, assert_invariants
):
    server = _server_in(kind, customer)
    wallet = billing_services.Wallet.objects.get(pk=server.wallet_id)
    if path == "batch_after_top_up":
        top_up(wallet)
        run_at(at(2026, 5, 10, 14, 30), "bill_usage")
    elif path == "batch_after_grace":
        run_at(at(2026, 5, 10, 12) + GRACE + H, "bill_usage")
    elif path == "operator_resume":
        top_up(wallet)
        at_moment(at(2026, 5, 10, 14, 30), cloud.server_resume, server_id=server.id)
    elif path == "operator_lifts_hold":
        top_up(wallet)
        at_moment(at(2026, 5, 10, 14, 30), cloud.server_lift_operator_hold, server_id=server.id)
    elif path == "customer_terminates":
        cloud.server_terminate(server_id=server.id, owner_id=customer.id)
    server.refresh_from_db()
    assert (server.status, server.suspension_causes) == (status, causes)
    assert_invariants()


SUBSCRIPTION_CASES = [
    ("unpaid", "batch_after_top_up", "active", []),
    ("operator", "batch_after_top_up", "suspended", ["operator"]),
    ("unpaid+operator", "batch_after_top_up", "suspended", ["unpaid", "operator"]),
    ("operator", "batch_after_grace", "suspended", ["operator"]),
    ("unpaid+operator", "batch_after_grace", "suspended", ["unpaid", "operator"]),
    ("unpaid", "batch_after_grace", "cancelled", ["unpaid"]),
    ("unpaid", "operator_resume", "active", []),
    ("operator", "operator_resume", "active", []),
    ("unpaid+operator", "operator_resume", "active", []),
    ("operator", "operator_lifts_hold", "active", []),
    ("unpaid+operator", "operator_lifts_hold", "suspended", ["unpaid"]),
    ("unpaid", "customer_cancels", "cancelled", ["unpaid"]),
    ("operator", "customer_cancels", "cancelled", ["operator"]),
]


def _subscription_in(kind: str, customer) -> Subscription:
    if kind == "operator":
        wallet = funded_wallet(customer, amount=10_000)
        subscription = subscribe(wallet, at(2026, 5, 10))
        at_moment(
            at(2026, 6, 5),
            hosting.subscription_suspend,
            subscription_id=subscription.id,
            reason="abuse report",
        )
    else:
        subscription = unpaid_subscription(customer)
        if kind == "unpaid+operator":
            at_moment(
                at(2026, 6, 11), hosting.subscription_suspend, subscription_id=subscription.id, reason="legal"
            )
    subscription.refresh_from_db()
    assert subscription.status == Subscription.Status.SUSPENDED
    return subscription


@pytest.mark.parametrize(("kind", "path", "status", "causes"), SUBSCRIPTION_CASES)
def test_subscription_causes_are_lifted_only_by_their_paths(
    customer, kind, path, status, causes, assert_invariants
):
    subscription = _subscription_in(kind, customer)
    wallet = billing_services.Wallet.objects.get(pk=subscription.wallet_id)
    later = at(2026, 6, 12)
    if path == "batch_after_top_up":
        top_up(wallet)
        run_at(later, "renew_subscriptions")
    elif path == "batch_after_grace":
        run_at(at(2026, 6, 11) + HOSTING_GRACE + H, "renew_subscriptions")
    elif path == "operator_resume":
        top_up(wallet)
        at_moment(later, hosting.subscription_resume, subscription_id=subscription.id)
    elif path == "operator_lifts_hold":
        top_up(wallet)
        at_moment(later, hosting.subscription_lift_operator_hold, subscription_id=subscription.id)
    elif path == "customer_cancels":
        hosting.subscription_cancel(subscription_id=subscription.id, owner_id=customer.id)
    subscription.refresh_from_db()
    assert (subscription.status, subscription.suspension_causes) == (status, causes)
    assert_invariants()


def test_an_operator_suspension_needs_a_reason_and_is_recorded_with_it(wallet):
    server = buy_server(wallet, at(2026, 5, 10, 10))
    with pytest.raises(InvalidState):
        cloud.server_suspend(server_id=server.id, reason="  ")
    cloud.server_suspend(server_id=server.id, reason="abuse report #12")
    server.refresh_from_db()
    assert (server.suspension_causes, server.operator_reason) == (["operator"], "abuse report #12")
    with pytest.raises(InvalidState):
        cloud.server_suspend(server_id=server.id, reason="again")


# --- What each resume charges ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["batch", "operator"])
def test_every_path_resuming_an_unpaid_server_charges_the_same_hours(customer, path, assert_invariants):
    """The server ran 10:00 to 11:30 on one paid hour; metering at 11:30 could not pay
    11:00-12:00 and suspended it. Resumed at 14:30: the hour it ran unpaid (11:00-12:00)
    and the hour from 14:30 are charged, the suspended time is not, whichever path."""
    server = unpaid_server(customer)
    wallet = billing_services.Wallet.objects.get(pk=server.wallet_id)
    top_up(wallet)
    if path == "batch":
        run_at(at(2026, 5, 10, 14, 30), "bill_usage")
    else:
        at_moment(at(2026, 5, 10, 14, 30), cloud.server_resume, server_id=server.id)
        run_at(at(2026, 5, 10, 14, 30), "settle_usage")
    server.refresh_from_db()
    assert server.paid_until == at(2026, 5, 10, 15, 30)
    # the first hour; then one charge closing the span 11:00 to 15:30, two hours of it
    assert charges_for(ServerCharge, server) == [
        (at(2026, 5, 10, 10), at(2026, 5, 10, 11), SERVER_PRICE),
        (at(2026, 5, 10, 11), at(2026, 5, 10, 15, 30), 2 * SERVER_PRICE),
    ]
    assert list(Usage.objects.filter(service_id=server.id).values_list("hours", "amount")) == [
        (3, 3 * SERVER_PRICE)
    ]
    assert_invariants()


def test_an_operator_resume_the_wallet_cannot_pay_changes_nothing(customer, assert_invariants):
    server = unpaid_server(customer)
    with time_machine.travel(at(2026, 5, 10, 14, 30), tick=False), pytest.raises(InsufficientFunds):
        cloud.server_resume(server_id=server.id)
    server.refresh_from_db()
    assert (server.status, server.suspension_causes) == ("suspended", ["unpaid"])
    assert len(charges_for(ServerCharge, server)) == 1
    assert_invariants()


def test_a_subscription_resumed_inside_its_paid_month_is_not_charged_again(wallet, assert_invariants):
    """Bought 10 May (paid to 10 June), suspended by an operator 20 May, resumed 21 May:
    the month to 10 June is kept and nothing is charged until it ends."""
    subscription = subscribe(wallet, at(2026, 5, 10))
    at_moment(at(2026, 5, 20), hosting.subscription_suspend, subscription_id=subscription.id, reason="abuse")
    assert run_at(at(2026, 5, 21), "renew_subscriptions")["resumed"] == 0  # the batch leaves it
    at_moment(at(2026, 5, 21), hosting.subscription_resume, subscription_id=subscription.id)
    subscription.refresh_from_db()
    assert (subscription.status, subscription.current_period_end) == ("active", at(2026, 6, 10))
    assert charges_for(SubscriptionCharge, subscription) == [(at(2026, 5, 10), at(2026, 6, 10), MONTH_PRICE)]
    run_at(at(2026, 6, 10, 1), "renew_subscriptions")  # the next month, once the paid one ends
    assert charges_for(SubscriptionCharge, subscription)[-1] == (
        at(2026, 6, 10),
        at(2026, 7, 10),
        MONTH_PRICE,
    )
    assert_invariants()


@pytest.mark.parametrize("path", ["batch", "operator"])
def test_resuming_an_unpaid_subscription_charges_one_month_from_the_resume(customer, path, assert_invariants):
    """Unpaid since 10 June; resumed 15 August: one month from 15 August, never the
    months it was off, whichever path resumes it."""
    subscription = unpaid_subscription(customer)
    wallet = billing_services.Wallet.objects.get(pk=subscription.wallet_id)
    top_up(wallet)
    if path == "batch":
        Subscription.objects.filter(pk=subscription.pk).update(unpaid_since=at(2026, 8, 14))  # in grace
        run_at(at(2026, 8, 15), "renew_subscriptions")
    else:
        at_moment(at(2026, 8, 15), hosting.subscription_resume, subscription_id=subscription.id)
    subscription.refresh_from_db()
    assert (subscription.status, subscription.current_period_end) == ("active", at(2026, 9, 15))
    assert charges_for(SubscriptionCharge, subscription) == [
        (at(2026, 5, 10), at(2026, 6, 10), MONTH_PRICE),
        (at(2026, 8, 15), at(2026, 9, 15), MONTH_PRICE),
    ]
    assert_invariants()


def test_an_operator_resume_of_an_unpaid_subscription_the_wallet_cannot_pay_changes_nothing(customer):
    subscription = unpaid_subscription(customer)
    with time_machine.travel(at(2026, 6, 12), tick=False), pytest.raises(InsufficientFunds):
        hosting.subscription_resume(subscription_id=subscription.id)
    subscription.refresh_from_db()
    assert (subscription.status, subscription.suspension_causes) == ("suspended", ["unpaid"])
    assert len(charges_for(SubscriptionCharge, subscription)) == 1


# --- The clock the customer sees ------------------------------------------------------------------


def test_the_termination_clock_runs_only_for_unpaid_alone(customer):
    server = unpaid_server(customer)
    assert cloud.server_terminates_at(server) == at(2026, 5, 10, 11, 30) + GRACE
    at_moment(at(2026, 5, 10, 12), cloud.server_suspend, server_id=server.id, reason="legal hold")
    server.refresh_from_db()
    assert cloud.server_terminates_at(server) is None
    at_moment(at(2026, 5, 10, 13), cloud.server_lift_operator_hold, server_id=server.id)
    server.refresh_from_db()
    assert cloud.server_terminates_at(server) == at(2026, 5, 10, 11, 30) + GRACE


def test_an_unpaid_subscription_is_cancelled_after_the_hosting_grace_period(customer, settings, published):
    settings.IAAS_HOSTING_GRACE_DAYS = 3
    subscription = unpaid_subscription(customer)
    assert hosting.subscription_cancels_at(subscription) == at(2026, 6, 10, 1) + dt.timedelta(days=3)
    assert run_at(at(2026, 6, 13), "renew_subscriptions")["still_suspended"] == 1
    summary = run_at(at(2026, 6, 13, 1), "renew_subscriptions")
    assert summary["cancelled"] == 1
    subscription.refresh_from_db()
    assert subscription.status == Subscription.Status.CANCELLED
    cancelled = [e for e in published if type(e).__name__ == "SubscriptionCancelled"]
    assert [e.reason for e in cancelled] == ["unpaid"]


# --- Refusals no top-up can cure ----------------------------------------------------------------------


def test_a_refusal_no_top_up_can_cure_suspends_for_an_operator_with_the_error(wallet, catalog):
    """A server whose plan's currency no longer matches its wallet (CurrencyMismatch) is
    suspended for a person to resolve, never left running unbilled."""
    server = buy_server(wallet, at(2026, 5, 10, 10))
    with connection.cursor() as cursor:  # a currency the admin no longer lets anyone set
        cursor.execute("UPDATE cloud_serverplan SET currency = 'USD' WHERE id = %s", [server.plan_id])
    assert run_at(at(2026, 5, 10, 11, 30), "bill_usage")["suspended"] == 1
    server.refresh_from_db()
    assert server.suspension_causes == ["operator"]
    assert "currency_mismatch" in server.operator_reason
    assert run_at(at(2026, 5, 20), "bill_usage")["ended"] == 0  # no clock for it


# --- A frozen wallet ---------------------------------------------------------------------------------


def test_a_frozen_wallet_stops_spending_from_an_allowance_reserved_before(
    settings, customer, assert_invariants
):
    settings.IAAS_RESERVE_AHEAD = {**settings.IAAS_RESERVE_AHEAD, "cloud": 1_000}
    wallet = funded_wallet(customer, amount=10_000)
    server = buy_server(wallet, at(2026, 5, 10, 10))  # reserves a chunk: 996 left in the allowance
    wallets.change_status(wallet_id=wallet.id, status="frozen")
    bus.deliver_pending()
    with pytest.raises(billing_services.WalletNotActive):
        buy_server(wallet, at(2026, 5, 10, 10, 5))
    assert run_at(at(2026, 5, 10, 11, 30), "bill_usage")["suspended"] == 1
    server.refresh_from_db()
    assert server.suspension_causes == ["wallet_blocked"]
    assert cloud.server_terminates_at(server) is None
    wallets.change_status(wallet_id=wallet.id, status="active")
    assert run_at(at(2026, 5, 10, 12, 30), "bill_usage")["resumed"] == 1
    assert_invariants()


# --- Refunds and the monthly cap -----------------------------------------------------------------------


def test_refunded_charges_do_not_count_towards_the_monthly_cap(customer, assert_invariants):
    wallet = funded_wallet(customer, amount=10_000)
    server = buy_server(wallet, at(2026, 5, 1), plan="s-1vcpu-1gb")  # 1 an hour, at most 500 a month
    run_at(at(2026, 5, 31, 20, 30), "bill_usage")  # capped: 500 in May
    capped = ServerCharge.objects.filter(subject_id=server.id).order_by("-amount").first()
    operator = UserFactory(is_staff=True)
    billing_services.charge_refund(charge_id=capped.id, reason="outage", operator_id=operator.id, amount=100)
    bus.deliver_pending()
    capped.refresh_from_db()
    assert capped.refunded_amount == 100
    run_at(at(2026, 5, 31, 23, 30), "bill_usage")  # 3 more hours fit under the cap again
    may = sum(amount for start, _, amount in charges_for(ServerCharge, server) if start.month == 5)
    assert may == 503
    assert_invariants()


# --- The history of suspensions --------------------------------------------------------------------


def test_every_path_that_changes_a_suspension_is_in_the_service_history(customer):
    """Who (an operator, or the run by name), when, the causes before and after."""
    operator = UserFactory(username="olga", is_staff=True)
    server = unpaid_server(customer)  # bill_usage suspended it
    at_moment(
        at(2026, 5, 10, 12), cloud.server_suspend, server_id=server.id, reason="legal", actor_id=operator.id
    )
    at_moment(at(2026, 5, 10, 13), cloud.server_lift_operator_hold, server_id=server.id, actor_id=operator.id)
    top_up(billing_services.Wallet.objects.get(pk=server.wallet_id))
    run_at(at(2026, 5, 10, 14, 30), "bill_usage")  # the run resumes it
    history = [
        (
            r.action,
            r.actor_id,
            r.actor_label,
            r.before.get("suspension_causes"),
            r.after.get("suspension_causes"),
        )
        for r in ChangeRecord.objects.filter(obj_type="cloud.server", obj_id=str(server.id)).order_by(
            "occurred_at"
        )
    ]
    assert history == [
        ("suspend", None, "bill_usage", [], ["unpaid"]),
        ("suspend", operator.id, "", ["unpaid"], ["unpaid", "operator"]),
        ("lift_operator_hold", operator.id, "", ["unpaid", "operator"], ["unpaid"]),
        ("resume", None, "bill_usage", ["unpaid"], []),
    ]


def test_subscription_suspensions_are_in_its_history(customer):
    operator = UserFactory(username="olga", is_staff=True)
    subscription = unpaid_subscription(customer)
    at_moment(
        at(2026, 6, 11),
        hosting.subscription_suspend,
        subscription_id=subscription.id,
        reason="x",
        actor_id=operator.id,
    )
    top_up(billing_services.Wallet.objects.get(pk=subscription.wallet_id))
    at_moment(
        at(2026, 6, 12), hosting.subscription_resume, subscription_id=subscription.id, actor_id=operator.id
    )
    actions = list(
        ChangeRecord.objects.filter(obj_type="hosting.subscription", obj_id=str(subscription.id))
        .order_by("occurred_at")
        .values_list("action", "actor_label")
    )
    assert actions == [("suspend", "renew_subscriptions"), ("suspend", ""), ("resume", "")]
