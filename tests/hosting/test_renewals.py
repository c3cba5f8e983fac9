"""renew_subscriptions: an ended period is renewed for a month and charged once; a
wallet that cannot pay suspends the subscription, one that can resumes it; a cancelled
subscription is never renewed."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command

from iaas.billing import services as billing_services
from iaas.contracts import bus
from iaas.contracts.events import SubscriptionResumed, SubscriptionSuspended
from iaas.hosting import services
from iaas.hosting.models import Charge, Subscription
from tests.batch_runs import at, charges_for, run_at
from tests.factories import UserFactory, funded_wallet
from tests.threads import run_at_once

PRICE = 399  # web-starter


def renew(moment: dt.datetime, *args: str) -> dict:
    return run_at(moment, "renew_subscriptions", *args)


def subscribe(wallet, moment: dt.datetime, domain: str = "example.com") -> Subscription:
    with time_machine.travel(moment, tick=False):
        subscription = services.subscription_create(
            owner_id=wallet.owner_id, wallet_id=wallet.id, domain=domain, plan_id="web-starter"
        )
        bus.deliver_pending()
    return subscription


def charges(subscription) -> list[tuple[dt.datetime, dt.datetime, int]]:
    return charges_for(Charge, subscription)


def test_an_ended_period_is_renewed_for_a_month_and_charged_once(wallet, assert_invariants):
    subscription = subscribe(wallet, at(2026, 5, 10, 9))
    assert renew(at(2026, 6, 10, 8, 59))["renewed"] == 0
    summary = renew(at(2026, 6, 10, 9))
    assert (summary["renewed"], summary["months_charged"], summary["amounts"]) == (1, 1, {"EUR": PRICE})
    assert renew(at(2026, 6, 10, 9))["renewed"] == 0  # again: nothing
    subscription.refresh_from_db()
    assert subscription.current_period_end == at(2026, 7, 10, 9)
    assert charges(subscription) == [
        (at(2026, 5, 10, 9), at(2026, 6, 10, 9), PRICE),
        (at(2026, 6, 10, 9), at(2026, 7, 10, 9), PRICE),
    ]
    assert Charge.objects.get(period_start=at(2026, 6, 10, 9)).transaction_date == at(2026, 6, 10, 9)
    wallet.refresh_from_db()
    assert wallet.balance == 10_000 - 2 * PRICE
    assert_invariants()


def test_every_missed_month_is_renewed(wallet):
    subscription = subscribe(wallet, at(2026, 5, 10, 9))
    summary = renew(at(2026, 8, 1))
    assert (summary["renewed"], summary["months_charged"]) == (1, 2)
    subscription.refresh_from_db()
    assert subscription.current_period_end == at(2026, 8, 10, 9)


def test_a_cancelled_subscription_is_not_renewed(wallet):
    subscription = subscribe(wallet, at(2026, 5, 10, 9))
    with time_machine.travel(at(2026, 5, 20), tick=False):
        services.subscription_cancel(subscription_id=subscription.id)
    assert renew(at(2026, 6, 11))["subscriptions"] == 0
    subscription.refresh_from_db()
    assert subscription.status == "cancelled"
    assert len(charges(subscription)) == 1


def test_suspended_when_the_wallet_cannot_pay_and_resumed_when_it_can(customer, published, assert_invariants):
    wallet = funded_wallet(customer, amount=PRICE)
    subscription = subscribe(wallet, at(2026, 5, 10, 9))
    assert renew(at(2026, 6, 10, 10))["suspended"] == 1
    subscription.refresh_from_db()
    assert (subscription.status, subscription.suspended_at) == ("suspended", at(2026, 6, 10, 10))
    assert SubscriptionSuspended in [type(e) for e in published]
    assert renew(at(2026, 6, 11))["still_suspended"] == 1

    billing_services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=1_000)
    summary = renew(at(2026, 6, 15, 12))
    assert (summary["resumed"], summary["amounts"]) == (1, {"EUR": PRICE})
    subscription.refresh_from_db()
    assert (subscription.status, subscription.suspended_at) == ("active", None)
    assert subscription.current_period_end == at(2026, 7, 15, 12)  # a month from resumption
    assert charges(subscription)[-1] == (at(2026, 6, 15, 12), at(2026, 7, 15, 12), PRICE)
    assert SubscriptionResumed in [type(e) for e in published]
    assert_invariants()


def test_dry_run_changes_nothing(wallet):
    subscription = subscribe(wallet, at(2026, 5, 10, 9))
    out = StringIO()
    with time_machine.travel(at(2026, 7, 11), tick=False):
        call_command("renew_subscriptions", "--dry-run", stdout=out)
    assert "1 active subscription(s) due for 2 month(s), 7.98 EUR" in out.getvalue()
    assert len(charges(subscription)) == 1


def run_renew_subscriptions():
    call_command("renew_subscriptions", stdout=StringIO(), stderr=StringIO())


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_charge_each_month_once(catalog, assert_invariants):
    subscriptions = [
        subscribe(funded_wallet(UserFactory(), amount=5_000), at(2026, 5, 10, 9), f"site{n}.example")
        for n in range(6)
    ]
    with time_machine.travel(at(2026, 8, 1), tick=False):
        runs = run_at_once(run_renew_subscriptions, run_renew_subscriptions)
        call_command("renew_subscriptions", stdout=StringIO())  # picks up any skipped as busy
        bus.deliver_pending()
    assert [run.error for run in runs] == [None, None]
    for subscription in subscriptions:
        subscription.refresh_from_db()
        assert subscription.current_period_end == at(2026, 8, 10, 9)
        assert [start for start, _, _ in charges(subscription)] == [
            at(2026, 5, 10, 9),
            at(2026, 6, 10, 9),
            at(2026, 7, 10, 9),
        ]
    assert_invariants()


def test_renewals_keep_the_purchase_day_through_short_months():
    from iaas.hosting.services import month_after

    anchor = dt.datetime(2026, 1, 31, 10, 0, tzinfo=dt.UTC)
    ends = [month_after(anchor, anchor)]
    for _ in range(3):
        ends.append(month_after(anchor, ends[-1]))
    assert [e.date().isoformat() for e in ends] == ["2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"]
