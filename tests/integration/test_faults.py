"""Fault injection, the cheap part (issue 7): Billing's settlement handler fails for a
while. Settlements pile up as pending, nobody overspends meanwhile, nothing is
half-written, and once the handler recovers the backlog drains: every charge settled
exactly once, every invariant intact. The long scenarios (SIGKILL, a PostgreSQL
restart) are in bench/faults.py."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from iaas.billing.handlers import settle_recorded_charges as settle_charge
from iaas.billing.models import LedgerEntry, Reservation
from iaas.cloud import services as cloud
from iaas.cloud.models import Charge as CloudCharge
from iaas.contracts import bus
from iaas.contracts.errors import InsufficientFunds
from iaas.contracts.models import OutboxMessage
from iaas.hosting import services as hosting
from iaas.hosting.models import Charge as HostingCharge
from tests.factories import funded_wallet

SETTLE = "billing.settle_recorded_charges"  # its subscription name
LATER = dt.timedelta(minutes=10)  # past any retry delay (2 s, 4 s, ... capped at 5 minutes)


class Outage:
    """Billing's settlement handler raises while the outage lasts."""

    def __init__(self, monkeypatch, *, after_writing: bool = False) -> None:
        self.calls = 0
        self.after_writing = after_writing
        monkeypatch.setitem(bus._handlers_by_name, SETTLE, self.handler)
        self.down = True

    def handler(self, event) -> None:
        self.calls += 1
        if not self.down:
            settle_charge(event)
            return
        if self.after_writing:
            settle_charge(event)  # writes the ledger entry, the capture, the wallet ...
        raise ConnectionError("the settlement handler is down")  # ... then fails


def pending_settlements() -> int:
    return OutboxMessage.objects.filter(handler=SETTLE).exclude(status=OutboxMessage.Status.DONE).count()


def buy_some(customer, wallet, count: int) -> int:
    """Alternate servers and hosting subscriptions; returns what they cost."""
    spent = 0
    for n in range(count):
        if n % 2:
            hosting.subscription_create(
                owner_id=customer.id, wallet_id=wallet.id, domain=f"outage{n}.example", plan_id="web-starter"
            )
            spent += 399
        else:
            cloud.server_create(
                owner_id=customer.id, wallet_id=wallet.id, name=f"vm{n}", plan_id="s-2vcpu-4gb"
            )
            spent += 4
    return spent


def buy_until_refused(customer, wallet) -> int:
    """Hosting subscriptions until Billing refuses to reserve; returns what they cost."""
    spent = 0
    for n in range(50):
        try:
            hosting.subscription_create(
                owner_id=customer.id, wallet_id=wallet.id, domain=f"more{n}.example", plan_id="web-starter"
            )
        except InsufficientFunds:
            return spent
        spent += 399
    raise AssertionError("Billing never refused")


def assert_only_unsettled_charges_reported(wallet):
    """Money invariants hold (I1 to I4, I6 to I9: the backlog is counted as pending), and
    reconciliation raises the alarm on the charges stuck longer than it tolerates."""
    from iaas.operations.reconciliation import reconcile

    report = reconcile()
    others = {name: found for name, found in report.violations.items() if name != "I5" and found}
    assert others == {}, report.as_dict()
    stuck = report.violations["I5"]
    assert stuck, "a settlement stuck for ten minutes must be reported"
    assert all(v.wallet_id == wallet.id and "charge not settled" in v.detail for v in stuck)


def charges() -> int:
    return CloudCharge.objects.count() + HostingCharge.objects.count()


# Outbox rows per ChargeSettled: one, for the context whose charges the entry settled
# (its subscription takes only those: bus.subscribe(..., when=)).
TOLD = 1


@pytest.mark.parametrize("after_writing", [False, True], ids=["fails-at-once", "fails-after-writing"])
def test_settlements_pile_up_while_the_handler_fails_then_drain(
    catalog, customer, monkeypatch, assert_invariants, after_writing
):
    wallet = funded_wallet(customer, amount=2_000)
    outage = Outage(monkeypatch, after_writing=after_writing)

    spent = buy_some(customer, wallet, 6)
    report = bus.deliver_pending()
    assert (report.delivered, report.failed) == (0, 6)
    assert pending_settlements() == 6

    # Nothing half-written: the money is reserved, not yet booked, whatever the handler
    # managed to write before it failed was rolled back with its savepoint.
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (2_000, spent)
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE).exists()
    assert not Reservation.objects.filter(kind=Reservation.Kind.CAPTURE).exists()
    row = OutboxMessage.objects.filter(handler=SETTLE).first()
    assert row.attempts == 1
    assert "the settlement handler is down" in row.last_error
    assert_invariants()  # I4 counts the pending charges: a backlog is not a violation

    # The outage goes on: retries fail too, and the customer still cannot spend money
    # that is reserved for charges not yet settled.
    with time_machine.travel(timezone.now() + LATER, tick=True):
        assert bus.deliver_pending().failed == 6
        spent += buy_until_refused(customer, wallet)
        wallet.refresh_from_db()
        assert wallet.reserved == spent <= wallet.balance == 2_000
        assert pending_settlements() == charges() > 6
        assert_only_unsettled_charges_reported(wallet)

    # The handler recovers: rows still backing off wait for their time, then all drain.
    outage.down = False
    assert bus.deliver_pending().delivered == 0
    with time_machine.travel(timezone.now() + 2 * LATER, tick=True):
        report = bus.deliver_pending()
    assert report.failed == 0
    # Each settlement delivered once (one event each, one by one: an entry each), and each
    # entry told to every context that subscribes to ChargeSettled.
    assert report.delivered == charges() * (1 + TOLD)
    assert pending_settlements() == 0

    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (2_000 - spent, 0)
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE).count() == charges()
    assert Reservation.objects.filter(kind=Reservation.Kind.CAPTURE).count() == charges()  # once each
    report = assert_invariants()
    assert report.pending_events == 0


def test_a_settlement_given_up_on_is_retried_by_the_operator_and_applied_once(
    catalog, customer, monkeypatch, settings, assert_invariants
):
    settings.IAAS_OUTBOX_MAX_ATTEMPTS = 2
    wallet = funded_wallet(customer, amount=1_000)
    outage = Outage(monkeypatch)
    buy_some(customer, wallet, 3)
    bus.deliver_pending()
    with time_machine.travel(timezone.now() + LATER, tick=True):
        assert bus.deliver_pending().failed == 3
        failed = OutboxMessage.objects.filter(handler=SETTLE, status=OutboxMessage.Status.FAILED)
        assert failed.count() == 3  # given up on: waiting for an operator
        # Still undelivered money, counted as pending for I4, and reported as stuck.
        assert_only_unsettled_charges_reported(wallet)

    outage.down = False
    assert bus.deliver_pending().delivered == 0  # nothing retries a failed row by itself
    assert bus.retry_failed() == 3  # the admin's action, or deliver_events --retry-failed
    assert bus.deliver_pending().delivered == 3 * (1 + TOLD)  # and each entry told to the contexts
    assert bus.deliver_pending().delivered == 0
    assert Reservation.objects.filter(kind=Reservation.Kind.CAPTURE).count() == 3
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (1_000 - 4 - 399 - 4, 0)
    assert_invariants()
