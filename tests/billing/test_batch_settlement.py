"""The delivery worker settles a busy wallet's pending charges in one transaction."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from iaas.billing.models import LedgerEntry
from iaas.cloud import services as cloud
from iaas.contracts import bus
from iaas.contracts.models import OutboxMessage
from iaas.hosting import services as hosting
from tests.factories import funded_wallet

pytestmark = pytest.mark.django_db


def buy_many(customer, wallet, count):
    for n in range(count):
        cloud.server_create(owner_id=customer.id, wallet_id=wallet.id, name=f"vm-{n}", plan_id="s-1vcpu-1gb")
    hosting.subscription_create(
        owner_id=customer.id,
        wallet_id=wallet.id,
        domain=f"{wallet.id.hex[:12]}.example",
        plan_id="web-starter",
    )


def test_one_wallets_backlog_settles_in_one_batch(catalog, customer, wallet, assert_invariants):
    buy_many(customer, wallet, 20)
    with CaptureQueriesContext(connection) as batched:
        report = bus.deliver_pending(batch_size=100)
    assert report == bus.DeliveryReport(delivered=21)
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (10_000 - 20 - 399, 0)
    entries = list(LedgerEntry.objects.filter(wallet=wallet, kind="charge").order_by("sequence"))
    assert [e.sequence for e in entries] == list(range(2, 23))
    assert_invariants()
    # One claim, one wallet lock, bulk writes (plus the test transaction's savepoints):
    # about twenty statements for 21 charges, where one transaction each takes 8 apiece.
    assert len(batched.captured_queries) < 25


def test_a_bad_event_in_a_batch_does_not_hold_back_the_others(catalog, customer, wallet, assert_invariants):
    buy_many(customer, wallet, 3)
    bad = OutboxMessage.objects.filter(event_type="ChargesRecorded").first()
    OutboxMessage.objects.filter(pk=bad.pk).update(payload={**bad.payload, "currency": "USD"})
    report = bus.deliver_pending(batch_size=100)
    assert report == bus.DeliveryReport(delivered=3, failed=1)
    bad.refresh_from_db()
    assert bad.status == "pending"
    assert "USD" in bad.last_error


def test_a_charge_twice_in_one_batch_is_settled_once(catalog, customer, wallet, assert_invariants):
    buy_many(customer, wallet, 1)
    original = OutboxMessage.objects.filter(event_type="ChargesRecorded").first()
    OutboxMessage.objects.create(
        event_id=original.payload["event_id"].replace("-", "")[:-4] + "beef",
        event_type=original.event_type,
        handler=original.handler,
        payload=original.payload,
        wallet_id=original.wallet_id,
    )
    report = bus.deliver_pending(batch_size=100)
    assert report.failed == 0
    wallet.refresh_from_db()
    assert LedgerEntry.objects.filter(wallet=wallet, kind="charge").count() == 2  # the server and the hosting
    assert wallet.reserved == 0
    assert_invariants()


def test_batches_never_mix_wallets(catalog, customer, other_customer, assert_invariants):
    first = funded_wallet(customer, amount=1_000)
    second = funded_wallet(other_customer, amount=1_000)
    buy_many(customer, first, 2)
    buy_many(other_customer, second, 2)
    assert bus.deliver_pending(batch_size=100) == bus.DeliveryReport(delivered=6)
    assert_invariants()
