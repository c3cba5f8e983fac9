"""I9 held by the database (PostgreSQL): a constraint trigger refuses a ledger entry
whose ``sequence`` is not its wallet's previous entry's + 1, or whose ``balance_after``
is not the previous entry's + its ``amount``. Multi-row INSERTs (settlement's
bulk_create) pass when their rows chain; drift planted past the triggers with
``session_replication_role = replica`` still goes in, and reconcile reports it."""

from __future__ import annotations

import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from iaas.billing import services
from iaas.billing.handlers import charges_to_settle
from iaas.billing.models import LedgerEntry
from iaas.operations.reconciliation import reconcile
from tests.factories import UserFactory, billing_consistent, funded_wallet, record_charges

pytestmark = pytest.mark.django_db

INSERT = (
    "INSERT INTO billing_ledgerentry (id, wallet_id, sequence, kind, amount, balance_after, "
    "transaction_date, posted_at, description, reference, context) VALUES "
)
ROW = "(gen_random_uuid(), %s, %s, 'adjustment', %s, %s, now(), now(), 'planted', %s, '')"


def insert(wallet, *rows: tuple[int, int, int]) -> None:
    """One INSERT statement of (sequence, amount, balance_after) rows for ``wallet``."""
    params = [
        p for seq, amount, after in rows for p in (wallet.id, seq, amount, after, f"planted:{uuid.uuid4()}")
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(INSERT + ", ".join([ROW] * len(rows)), params)


def last(wallet) -> LedgerEntry:
    return LedgerEntry.objects.filter(wallet=wallet).order_by("-sequence").first()


def test_the_next_entry_that_chains_is_accepted(wallet):
    previous = last(wallet)
    insert(wallet, (previous.sequence + 1, 5, previous.balance_after + 5))
    assert last(wallet).sequence == previous.sequence + 1


def test_an_entry_whose_balance_after_does_not_follow_is_refused(wallet):
    previous = last(wallet)
    with pytest.raises(IntegrityError, match="ledger_chain"):
        insert(wallet, (previous.sequence + 1, 5, previous.balance_after + 6))
    assert last(wallet) == previous


def test_an_entry_that_skips_a_sequence_number_is_refused(wallet):
    previous = last(wallet)
    with pytest.raises(IntegrityError, match="ledger_chain"):
        insert(wallet, (previous.sequence + 2, 5, previous.balance_after + 5))


def test_a_wallets_first_entry_starts_from_zero(customer):
    from tests.factories import funded_wallet

    empty = funded_wallet(customer, currency="USD")
    with pytest.raises(IntegrityError, match="ledger_chain"):
        insert(empty, (1, 100, 101))
    insert(empty, (1, 100, 100))


def test_a_multi_row_insert_that_chains_is_accepted_and_one_wrong_row_refuses_it_all(wallet):
    previous = last(wallet)
    seq, balance = previous.sequence, previous.balance_after
    with pytest.raises(IntegrityError, match="ledger_chain"):
        insert(
            wallet, (seq + 1, -10, balance - 10), (seq + 2, -10, balance - 21), (seq + 3, -10, balance - 31)
        )
    assert last(wallet) == previous
    insert(wallet, (seq + 1, -10, balance - 10), (seq + 2, -10, balance - 20), (seq + 3, -10, balance - 30))
    assert last(wallet).balance_after == balance - 30


def test_settlement_books_several_entries_of_several_wallets_in_one_statement(wallet, customer):
    """Each wallet's entries chain on from its last one (the trigger checks each row of
    the one INSERT against the row before it, I9)."""
    other = funded_wallet(UserFactory(), amount=500)
    events = [
        record_charges(wallet, [100, 100], context="cloud"),
        record_charges(wallet, [100], context="hosting"),
        record_charges(other, [50], context="cloud"),
    ]
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        entries = services.charges_settle(settlements=[charges_to_settle(event) for event in events]).entries
    inserts = [q["sql"] for q in queries if 'INSERT INTO "billing_ledgerentry"' in q["sql"]]
    assert len(inserts) == 1
    assert sorted((e.wallet_id == wallet.id, e.context, e.sequence, e.balance_after) for e in entries) == [
        (False, "cloud", 2, 450),
        (True, "cloud", 2, 9_800),
        (True, "hosting", 3, 9_700),
    ]
    billing_consistent()


def test_drift_planted_as_a_replica_still_goes_in_and_reconcile_reports_it(wallet):
    previous = last(wallet)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            INSERT + ROW,
            [wallet.id, previous.sequence + 1, 5, previous.balance_after + 6, "planted:drift"],
        )
        cursor.execute(
            "UPDATE billing_wallet SET balance = balance + 5, ledger_sequence = ledger_sequence + 1"
        )
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
    [violation] = reconcile().violations["I9"]
    assert (violation.wallet_id, violation.detail) == (wallet.id, "ledger chain broken")


def test_the_trigger_is_a_constraint_trigger_on_insert():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgconstraint <> 0, tgenabled FROM pg_trigger WHERE tgname = 'billing_ledgerentry_chain'"
        )
        assert cursor.fetchall() == [(True, "O")]
