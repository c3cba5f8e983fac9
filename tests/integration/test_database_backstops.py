"""The invariants the database holds by itself: no bug in Python can break them."""

import pytest
from django.db import IntegrityError, connection, transaction

from iaas.billing.models import LedgerEntry

pytestmark = pytest.mark.django_db


def execute(sql, params=()):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_reserved_above_balance_is_rejected(wallet):
    with pytest.raises(IntegrityError, match="wallet_reserved_within_balance"):
        execute("UPDATE billing_wallet SET reserved = balance + 1 WHERE id = %s", [wallet.id])


def test_a_negative_balance_is_rejected(wallet):
    with pytest.raises(IntegrityError, match="wallet_balance_not_negative"):
        execute("UPDATE billing_wallet SET balance = -1 WHERE id = %s", [wallet.id])


def test_a_negative_allowance_is_rejected(catalog, customer, wallet):
    from iaas.cloud import services

    services.server_create(owner_id=customer.id, wallet_id=wallet.id, name="web", plan_id="s-1vcpu-1gb")
    with pytest.raises(IntegrityError, match="cloud_allowance_not_negative"):
        execute(
            "UPDATE cloud_allowance SET amount = -1, granted_total = granted_total - 1 WHERE wallet_id = %s",
            [wallet.id],
        )


def test_an_allowance_whose_totals_do_not_add_up_is_rejected(catalog, customer, wallet):
    from iaas.hosting import services

    services.subscription_create(
        owner_id=customer.id, wallet_id=wallet.id, domain="a.example", plan_id="web-starter"
    )
    with pytest.raises(IntegrityError, match="hosting_allowance_totals_add_up"):
        execute("UPDATE hosting_allowance SET amount = amount + 100 WHERE wallet_id = %s", [wallet.id])


def test_a_negative_hold_is_rejected(wallet):
    execute(
        "INSERT INTO billing_hold (wallet_id, context, amount, granted_total, captured_total, "
        "released_total) "
        "VALUES (%s, 'cloud', 0, 0, 0, 0)",
        [wallet.id],
    )
    with pytest.raises(IntegrityError, match="hold_not_negative"):
        execute("UPDATE billing_hold SET amount = -1 WHERE wallet_id = %s", [wallet.id])


def test_updating_the_ledger_is_rejected(wallet):
    entry = LedgerEntry.objects.get(wallet=wallet)
    with pytest.raises(IntegrityError, match="append-only: UPDATE refused"):
        execute("UPDATE billing_ledgerentry SET amount = 1 WHERE id = %s", [entry.id])


def test_deleting_from_the_ledger_is_rejected(wallet):
    entry = LedgerEntry.objects.get(wallet=wallet)
    with pytest.raises(IntegrityError, match="append-only: DELETE refused"):
        execute("DELETE FROM billing_ledgerentry WHERE id = %s", [entry.id])
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(description="rewritten")


def test_a_charge_entry_must_be_a_debit(wallet):
    with pytest.raises(IntegrityError, match="ledger_amount_sign_matches_kind"):
        execute(
            "INSERT INTO billing_ledgerentry (id, wallet_id, sequence, kind, amount, balance_after, "
            "transaction_date, posted_at, description, reference, context) "
            "VALUES (gen_random_uuid(), %s, 99, 'charge', 5, 10005, now(), now(), 'x', 'x', 'cloud')",
            [wallet.id],
        )


def test_deleting_a_customer_with_money_is_refused(wallet, customer):
    from django.db.models import ProtectedError

    with pytest.raises(ProtectedError):
        customer.delete()
