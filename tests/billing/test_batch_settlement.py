"""Aggregate settlement (ARCHITECTURE.md, protocol step 3): the delivery worker settles
many wallets' pending charges in one transaction, with one ledger entry per wallet and
context, one applied-once record per charge, and a number of statements that does not
grow with the batch."""

import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from iaas.billing import services
from iaas.billing.handlers import charges_to_settle
from iaas.billing.models import LedgerEntry, Reservation, SettledCharge, Wallet
from iaas.cloud import services as cloud
from iaas.cloud.models import Charge as CloudCharge
from iaas.contracts import billing, bus
from iaas.contracts.errors import CurrencyMismatch, WalletNotFound
from iaas.contracts.events import ChargeRecorded, ChargeSettled
from iaas.contracts.models import OutboxMessage
from iaas.hosting import services as hosting
from tests.factories import UserFactory, billing_consistent, funded_wallet, record_charges

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


def test_one_wallets_backlog_settles_with_one_entry_per_context(
    catalog, customer, wallet, published, assert_invariants
):
    buy_many(customer, wallet, 20)
    report = bus.deliver_pending(batch_size=100)
    # The 21 events in one batch, then ChargeSettled of its two entries to each subscriber.
    assert report == bus.DeliveryReport(delivered=21 + 2 * TOLD)
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (10_000 - 20 - 399, 0)
    cloud_entry, hosting_entry = LedgerEntry.objects.filter(wallet=wallet, kind="charge").order_by("context")
    assert (cloud_entry.sequence, hosting_entry.sequence) == (2, 3)
    assert (cloud_entry.amount, cloud_entry.description) == (-20, "Cloud: 20 charges")
    assert hosting_entry.amount == -399
    assert hosting_entry.description == f"Hosting {wallet.id.hex[:12]}.example (web-starter), first month"
    assert cloud_entry.charges.count() == 20
    assert hosting_entry.charges.get().amount == 399
    assert cloud_entry.reference == f"charges:{cloud_entry.source_id}"
    # One capture per entry, for the entry's total.
    captures = Reservation.objects.filter(wallet=wallet, kind="capture")
    assert sorted((c.ledger_entry_id, c.amount) for c in captures) == sorted(
        [(cloud_entry.id, 20), (hosting_entry.id, 399)]
    )
    # The contexts are told which entry settled which charges.
    settled = [e for e in published if isinstance(e, ChargeSettled)]
    assert {(e.ledger_entry_id, frozenset(e.charge_ids)) for e in settled} == {
        (entry.id, frozenset(entry.charges.values_list("charge_id", flat=True)))
        for entry in (cloud_entry, hosting_entry)
    }
    # ... and record it on each (delivered above, to each subscribing context).
    assert set(CloudCharge.objects.filter(wallet_id=wallet.id).values_list("ledger_entry_id", flat=True)) == {
        cloud_entry.id
    }
    assert_invariants()


def buy_for_customers(count: int) -> list[Wallet]:
    wallets = []
    for _ in range(count):
        customer = UserFactory()
        wallet = funded_wallet(customer, amount=1_000)
        buy_many(customer, wallet, 2)
        wallets.append(wallet)
    return wallets


# Outbox rows per ChargeSettled: one, for the context whose charges the entry settled
# (its subscription takes only those: bus.subscribe(..., when=)).
TOLD = 1


def settlement_statements() -> list[str]:
    """The statements of one settlement batch (the backlog's first claim takes every
    pending ChargesRecorded), as PostgreSQL sees them (savepoints aside)."""
    pending = OutboxMessage.objects.filter(event_type="ChargesRecorded", status="pending")
    events = pending.count()
    with CaptureQueriesContext(connection) as queries:
        report = bus.deliver_next(batch_size=1_000)
    assert report == bus.DeliveryReport(delivered=events)
    assert not pending.exists()
    bus.deliver_pending()  # the contexts record their charges' entry (ChargeSettled)
    return [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]]


# The delivery worker's part: claim a row, claim the rest of the batch, mark them done.
DELIVERY_STATEMENTS = 3
# Billing's part: lock the wallets; which charges are applied already; the entries; the
# settled charges; the wallets; the holds; the captures; and the outbox rows that tell
# the contexts (ChargeSettled), when any subscribes.
SETTLEMENT_STATEMENTS = 7


def test_statements_per_batch_do_not_grow_with_the_batch(catalog, assert_invariants):
    buy_for_customers(3)
    small = settlement_statements()  # 9 events of 3 wallets
    buy_for_customers(30)
    large = settlement_statements()  # 90 events of 30 wallets
    assert len(small) == len(large) == DELIVERY_STATEMENTS + SETTLEMENT_STATEMENTS + TOLD, large
    assert OutboxMessage.objects.filter(status="pending").count() == 0
    assert LedgerEntry.objects.filter(kind="charge").count() == 33 * 2  # cloud and hosting per wallet
    assert SettledCharge.objects.count() == 33 * 3
    assert_invariants()


def test_a_bad_event_in_a_batch_does_not_hold_back_the_others(catalog, customer, wallet, assert_invariants):
    buy_many(customer, wallet, 3)
    bad = OutboxMessage.objects.filter(event_type="ChargesRecorded").first()
    OutboxMessage.objects.filter(pk=bad.pk).update(payload={**bad.payload, "currency": "USD"})
    report = bus.deliver_pending(batch_size=100)
    assert report.failed == 1
    settled = OutboxMessage.objects.filter(event_type="ChargesRecorded", status="done")
    assert settled.count() == 3
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
    assert SettledCharge.objects.filter(wallet=wallet).count() == 2
    assert wallet.reserved == 0
    assert_invariants()


def test_one_batch_spans_wallets(catalog, customer, other_customer, assert_invariants):
    first = funded_wallet(customer, amount=1_000)
    second = funded_wallet(other_customer, amount=1_000)
    buy_many(customer, first, 2)
    buy_many(other_customer, second, 2)
    # The six events in one batch, then ChargeSettled of four entries to each subscriber.
    assert bus.deliver_pending(batch_size=100) == bus.DeliveryReport(delivered=6 + 4 * TOLD)
    for wallet in (first, second):
        assert LedgerEntry.objects.filter(wallet=wallet, kind="charge").count() == 2
    assert_invariants()


def test_usage_closed_by_a_run_is_one_entry_dated_by_its_last_period(customer, wallet, published):
    event = record_charges(wallet, [96, 96, 40])
    bus.deliver_pending()
    entry = LedgerEntry.objects.get(wallet=wallet, kind="charge")
    assert (entry.amount, entry.context, entry.description) == (-232, "cloud", "Cloud: 3 charges")
    assert entry.transaction_date == max(c.period_end for c in event.charges)
    assert entry.reference == f"charges:{event.charges[0].charge_id}"
    charges = list(entry.charges.order_by("transaction_date"))
    assert [(c.charge_id, c.amount, c.subject_id, c.period_start, c.period_end) for c in charges] == [
        (c.charge_id, c.amount, c.subject_id, c.period_start, c.period_end) for c in event.charges
    ]
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (10_000 - 232, 0)
    [settled] = [e for e in published if isinstance(e, ChargeSettled)]
    assert settled.charge_ids == tuple(c.charge_id for c in event.charges)
    billing_consistent()


def test_a_single_charge_keeps_its_own_date_and_description(customer, wallet):
    event = record_charges(wallet, [96])
    bus.deliver_pending()
    entry = LedgerEntry.objects.get(wallet=wallet, kind="charge")
    assert entry.transaction_date == event.charges[0].transaction_date
    assert entry.description == event.charges[0].description


def test_a_redelivered_event_books_nothing_in_either_form(customer, wallet):
    event = record_charges(wallet, [10, 20])
    services.charges_settle(settlements=[charges_to_settle(event)])
    again = services.charges_settle(settlements=[charges_to_settle(event)])
    batch = services.charges_settle(settlements=[charges_to_settle(event)] * 2, skip_locked=True)
    assert (again.entries, batch.entries, batch.deferred) == ([], [], set())
    assert LedgerEntry.objects.filter(wallet=wallet, kind="charge").count() == 1
    assert SettledCharge.objects.count() == 2
    wallet.refresh_from_db()
    assert wallet.balance == 10_000 - 30
    bus.deliver_pending()  # the outbox's own delivery: applied already, nothing more
    assert LedgerEntry.objects.filter(wallet=wallet, kind="charge").count() == 1
    billing_consistent()


def test_a_partly_settled_event_books_only_its_new_charges(customer, wallet):
    event = record_charges(wallet, [10, 20, 30])
    first = services.ChargesToSettle(
        event.event_id, wallet.id, "cloud", "EUR", charges_to_settle(event).charges[:1]
    )
    services.charges_settle(settlements=[first])
    bus.deliver_pending()
    entries = list(LedgerEntry.objects.filter(wallet=wallet, kind="charge").order_by("sequence"))
    assert [e.amount for e in entries] == [-10, -50]
    assert [e.charges.count() for e in entries] == [1, 2]
    billing_consistent()


def test_the_legacy_one_charge_event_still_settles(customer, wallet, published):
    charge_id = uuid.uuid4()
    with transaction.atomic():
        billing.reserve(
            wallet_id=wallet.id, owner_id=customer.id, context="cloud", currency="EUR", amount=7, minimum=7
        )
        bus.publish(
            ChargeRecorded(
                charge_id=charge_id,
                wallet_id=wallet.id,
                context="cloud",
                amount=7,
                currency="EUR",
                transaction_date=timezone.now(),
                description="Server old (s-1vcpu-1gb), hour",
            )
        )
    assert OutboxMessage.objects.get(event_type="ChargeRecorded").handler == "billing.settle_charge"
    assert bus.deliver_pending() == bus.DeliveryReport(delivered=1 + TOLD)
    settled = SettledCharge.objects.get()
    assert (settled.charge_id, settled.amount, settled.ledger_entry.amount) == (charge_id, 7, -7)
    assert [e.charge_ids for e in published if isinstance(e, ChargeSettled)] == [(charge_id,)]
    billing_consistent()


def test_charges_in_another_currency_or_for_no_wallet_are_refused(customer, wallet):
    event = record_charges(wallet, [10])
    wrong = services.ChargesToSettle(
        event.event_id, wallet.id, "cloud", "USD", charges_to_settle(event).charges
    )
    # (Each in a savepoint, as the bus runs handlers: the service opens none of its own.)
    with pytest.raises(CurrencyMismatch), transaction.atomic():
        services.charges_settle(settlements=[wrong])
    nowhere = services.ChargesToSettle(
        event.event_id, uuid.uuid4(), "cloud", "EUR", charges_to_settle(event).charges
    )
    for skip_locked in (False, True):
        with pytest.raises(WalletNotFound), transaction.atomic():
            services.charges_settle(settlements=[nowhere], skip_locked=skip_locked)
    assert not SettledCharge.objects.exists()


def test_an_event_whose_amount_is_not_its_charges_sum_fails_loudly(customer, wallet):
    record_charges(wallet, [10, 20])
    row = OutboxMessage.objects.get(event_type="ChargesRecorded")
    OutboxMessage.objects.filter(pk=row.pk).update(payload={**row.payload, "amount": 31})
    assert bus.deliver_pending() == bus.DeliveryReport(failed=1)
    assert "add up to 30" in OutboxMessage.objects.get(pk=row.pk).last_error
    assert not SettledCharge.objects.exists()


def test_charges_with_no_hold_to_capture_from_are_refused(customer, wallet):
    event = record_charges(wallet, [10])
    hosting_event = services.ChargesToSettle(
        uuid.uuid4(), wallet.id, "hosting", "EUR", charges_to_settle(event).charges
    )
    with pytest.raises(IntegrityError, match="no hold"), transaction.atomic():
        services.charges_settle(settlements=[hosting_event])


def test_settled_charges_are_append_only_but_for_their_invoice_line(customer, wallet):
    record_charges(wallet, [10])
    bus.deliver_pending()
    charge = SettledCharge.objects.get()
    for statement in (
        "UPDATE billing_settledcharge SET amount = amount + 1",
        "UPDATE billing_settledcharge SET ledger_entry_id = ledger_entry_id",
        "DELETE FROM billing_settledcharge",
    ):
        with (
            pytest.raises(IntegrityError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement)
    assert SettledCharge.objects.get().amount == charge.amount


def plant(statement: str, *params) -> None:
    """Drift past the triggers, as a superuser with the replication role could."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(statement, params)
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")


def test_deep_reconcile_finds_an_entry_that_is_not_its_charges(customer, wallet):
    record_charges(wallet, [96, 96, 40])
    bus.deliver_pending()
    billing_consistent()
    entry = LedgerEntry.objects.get(kind="charge")
    plant("UPDATE billing_settledcharge SET amount = amount + 1 WHERE charge_id <> %s", entry.source_id)
    assert billing.check_invariants()["I5"] == []  # the running totals still agree
    [violation] = billing.check_invariants(deep=True)["I5"]
    assert (violation.wallet_id, violation.expected, violation.found) == (
        wallet.id,
        {"settled charges": 232},
        {"settled charges": 234, "count": 3},
    )
    assert f"entry #{entry.sequence} differs from the charges it settles" in violation.detail


def test_deep_reconcile_finds_a_charge_on_another_wallets_entry(customer, wallet, other_customer):
    other = funded_wallet(other_customer, amount=1_000)
    record_charges(wallet, [10])
    record_charges(other, [20, 30])
    bus.deliver_pending()
    theirs = LedgerEntry.objects.get(wallet=other, kind="charge")
    ours = SettledCharge.objects.get(wallet=wallet)
    plant("UPDATE billing_settledcharge SET ledger_entry_id = %s WHERE charge_id = %s", theirs.id, ours.pk)
    found = billing.check_invariants(deep=True)["I5"]
    assert any(f"charge {ours.pk} is not on a charge entry of its own" in v.detail for v in found)
    assert {v.wallet_id for v in found} == {wallet.id, other.id}  # both entries differ from their charges


def test_a_batch_ends_where_settling_its_events_one_by_one_ends(customer, other_customer):
    """The set-based path against the per-event one: the same money, holds and charges;
    only the number of entries differs (one per wallet and context per call)."""
    one_by_one = funded_wallet(customer, amount=1_000)
    batched = funded_wallet(other_customer, amount=1_000)
    for wallet, form in ((one_by_one, "each"), (batched, "batch")):
        events = [record_charges(wallet, [10, 20]), record_charges(wallet, [5], context="hosting")]
        events.append(record_charges(wallet, [7, 8, 9]))
        settlements = [charges_to_settle(event) for event in events]
        if form == "each":
            for settlement in settlements:
                services.charges_settle(settlements=[settlement])
        else:
            services.charges_settle(settlements=settlements, skip_locked=True)

    def books(wallet):
        wallet.refresh_from_db()
        holds = sorted(wallet.holds.values_list("context", "amount", "granted_total", "captured_total"))
        charges = sorted(wallet.settled_charges.values_list("context", "amount", "description"))
        return wallet.balance, wallet.reserved, holds, charges

    assert books(one_by_one) == books(batched)
    assert LedgerEntry.objects.filter(wallet=one_by_one, kind="charge").count() == 3
    assert LedgerEntry.objects.filter(wallet=batched, kind="charge").count() == 2
    billing_consistent()
