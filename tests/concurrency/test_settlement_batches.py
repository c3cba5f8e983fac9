"""Settlement batches across wallets (ARCHITECTURE.md, batches): a wallet another
transaction holds is deferred, never waited on; the rest of the batch commits; the
deferred events are settled by the next pass, once; two workers sharing a backlog book
each charge once, without deadlock."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from iaas.billing import services
from iaas.billing.models import LedgerEntry, SettledCharge
from iaas.cloud import services as cloud
from iaas.contracts import bus
from iaas.contracts.models import OutboxMessage
from tests.factories import UserFactory, billing_consistent, funded_wallet
from tests.threads import run_at_once

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]


def wallets_with_purchases(count: int, servers: int = 2):
    wallets = []
    for _ in range(count):
        customer = UserFactory()
        wallet = funded_wallet(customer, amount=1_000)
        for n in range(servers):
            cloud.server_create(
                owner_id=customer.id, wallet_id=wallet.id, name=f"vm-{n}", plan_id="s-1vcpu-1gb"
            )
        wallets.append(wallet)
    return wallets


def deadlocks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_a_busy_wallet_is_deferred_and_the_rest_commits(catalog, assert_invariants):
    busy, free = wallets_with_purchases(2)
    holding, release = threading.Event(), threading.Event()

    def hold_the_wallet():
        try:
            with transaction.atomic():
                services.wallet_lock(busy.id)  # a customer's purchase, say
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()  # this thread's own connection

    holder = threading.Thread(target=hold_the_wallet)
    holder.start()
    try:
        assert holding.wait(30)
        report = bus.deliver_pending(batch_size=100)
        told = 1  # the free wallet's entry, told to the context whose charges it settled
        assert report == bus.DeliveryReport(delivered=2 + told, deferred=2)
        waiting = OutboxMessage.objects.filter(wallet_id=busy.id, event_type="ChargesRecorded")
        assert [(m.status, m.attempts) for m in waiting] == [
            ("pending", 0),
            ("pending", 0),
        ]  # no attempt counted
        assert LedgerEntry.objects.filter(wallet=free, kind="charge").count() == 1
        assert not SettledCharge.objects.filter(wallet=busy).exists()
    finally:
        release.set()
        holder.join(30)
    waiting.update(available_at=timezone.now())  # the deferral's short delay, passed
    assert bus.deliver_pending(batch_size=100) == bus.DeliveryReport(delivered=2 + told)
    assert LedgerEntry.objects.filter(wallet=busy, kind="charge").get().charges.count() == 2
    assert_invariants()


def test_two_workers_share_a_backlog_and_book_each_charge_once(catalog, assert_invariants):
    wallets = wallets_with_purchases(12)
    before = deadlocks()

    def worker():
        total = bus.DeliveryReport()
        for _ in range(20):  # passes, as deliver_events --loop would make
            total = total + bus.deliver_pending(batch_size=5)
            OutboxMessage.objects.filter(status="pending").update(available_at=timezone.now())
            if not OutboxMessage.objects.filter(status="pending").exists():
                break
        return total

    outcomes = run_at_once(worker, worker)
    assert [o.error for o in outcomes] == [None, None]
    entries = LedgerEntry.objects.filter(kind="charge").count()
    told = 1  # each entry told to the context whose charges it settled (ChargeSettled)
    assert sum(o.value.delivered for o in outcomes) == 24 + entries * told  # each event once
    assert sum(o.value.failed for o in outcomes) == 0
    assert deadlocks() == before
    assert SettledCharge.objects.count() == 24
    # One cloud entry per wallet and batch: a batch (of five rows) may end between two of
    # a wallet's events, so a wallet has one or two.
    assert 12 <= LedgerEntry.objects.filter(kind="charge").count() <= 24
    assert {w.id for w in wallets} == set(SettledCharge.objects.values_list("wallet_id", flat=True))
    assert_invariants()
    billing_consistent()  # deep: each entry the sum of its charges, one capture each
