"""reconcile: every invariant checked in the database; drift planted by raw SQL is
reported with the right wallet and exit 1; --fix delivers events and repairs nothing else."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection

from iaas.billing.models import LedgerEntry, Wallet
from iaas.contracts import bus
from iaas.contracts.models import OutboxMessage


def run(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("reconcile", *args, stdout=out, stderr=StringIO())
    except SystemExit as exit_:
        return exit_.code, out.getvalue()
    return 0, out.getvalue()


def report(*args: str) -> tuple[int, dict]:
    code, out = run("--json", *args)
    return code, json.loads(out)


def violations(data: dict, invariant: str) -> list[dict]:
    return data["invariants"][invariant]["violations"]


def sql(statement: str, *params) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@pytest.fixture
def drift(three_wallets, buy_server, clock):
    """Three customers with a server each, everything delivered; then, by raw SQL, a
    balance off by one (first), a hold without reserved (second), and a purchase whose
    charge was never delivered (third), ten minutes old."""
    first, second, third = three_wallets
    for wallet in three_wallets:
        buy_server(wallet)
    bus.deliver_pending()
    sql("UPDATE billing_wallet SET balance = balance + 1 WHERE id = %s", first.id)
    first.refresh_from_db()  # balance now off by one
    sql(
        "UPDATE billing_hold SET amount = amount + 500, granted_total = granted_total + 500 "
        "WHERE wallet_id = %s AND context = 'cloud'",
        second.id,
    )
    buy_server(third, name="undelivered")
    clock.shift(dt.timedelta(minutes=10))
    return first, second, third


def test_a_consistent_database_passes(three_wallets, buy_server):
    for wallet in three_wallets:
        buy_server(wallet)
    bus.deliver_pending()
    code, out = run()
    assert code == 0
    for invariant in ("I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9"):
        assert f"  {invariant}  ok" in out
    assert "all 9 invariants hold" in out
    assert run("--deep")[0] == 0


def test_planted_drift_is_reported_with_the_right_wallet(drift):
    first, second, third = drift
    code, data = report()
    assert code == 1
    assert data["ok"] is False
    assert [(v["wallet_id"], v["expected"], v["found"]) for v in violations(data, "I1")] == [
        (str(first.id), first.balance - 1, first.balance)
    ]
    i3 = violations(data, "I3")
    assert [(v["wallet_id"], v["found"]) for v in i3] == [(str(second.id), 0)]
    assert i3[0]["expected"] == 500
    assert {v["wallet_id"] for v in violations(data, "I4")} == {str(second.id)}
    i5 = violations(data, "I5")
    assert [v["wallet_id"] for v in i5] == [str(third.id)]
    assert "charge not settled" in i5[0]["detail"]
    for invariant in ("I2", "I6", "I7", "I8", "I9"):
        assert violations(data, invariant) == [], invariant

    code, out = run()
    assert code == 1
    assert f"wallet {first.id}  expected {first.balance - 1}  found {first.balance}" in out
    assert "  I1  FAILED" in out
    assert "  I2  ok" in out


def test_fix_delivers_the_event_and_repairs_nothing_else(drift):
    first, second, third = drift
    code, data = report("--fix", "--dry-run")
    assert data["fix"] == {"dry_run": True, "would_deliver": 1}
    assert OutboxMessage.objects.exclude(status="done").count() == 1

    code, data = report("--fix")
    assert code == 1  # the balance and the hold are still wrong: --fix never rewrites them
    assert data["fix"]["delivered"] == 1
    assert violations(data, "I5") == []
    assert [v["wallet_id"] for v in violations(data, "I1")] == [str(first.id)]
    assert [v["wallet_id"] for v in violations(data, "I3")] == [str(second.id)]
    assert Wallet.objects.get(pk=first.id).balance == first.balance
    third_wallet = Wallet.objects.get(pk=third.id)
    assert LedgerEntry.objects.filter(wallet=third_wallet, kind="charge").count() == 2
    assert third_wallet.balance == 10_000 - 2 * 4  # both servers' first hours settled


def test_fix_alone_makes_a_lagging_database_whole(three_wallets, buy_server, clock):
    buy_server(three_wallets[0])
    clock.shift(dt.timedelta(hours=1))
    assert run()[0] == 1
    code, out = run("--fix")
    assert code == 0
    assert "--fix: delivered 1 event(s)" in out
    assert "all 9 invariants hold" in out


def test_a_recent_pending_event_is_not_a_violation(three_wallets, buy_server):
    buy_server(three_wallets[0])  # delivery lags a moment behind the purchase: normal
    code, data = report()
    assert code == 0
    assert data["pending_events"] == 1


def test_a_gap_in_invoice_numbers_and_a_charge_on_no_invoice_are_reported(three_wallets, buy_server):
    wallet = three_wallets[0]
    with time_machine.travel(dt.datetime(2026, 5, 10, tzinfo=dt.UTC), tick=False):
        buy_server(wallet)
        bus.deliver_pending()
    with time_machine.travel(dt.datetime(2026, 6, 1, 1, tzinfo=dt.UTC), tick=False):
        call_command("issue_invoices", "--period", "2026-05", stdout=StringIO())
        assert run()[0] == 0
        sql("UPDATE billing_invoiceseries SET last_number = last_number + 1")
        sql("SET CONSTRAINTS ALL IMMEDIATE")  # no deferred checks pending before ALTER TABLE
        for table in ("billing_settledcharge", "billing_invoiceline"):
            sql(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only")
        sql("UPDATE billing_settledcharge SET invoice_line_id = NULL")  # the charge leaves its line
        sql("DELETE FROM billing_invoiceline")
        for table in ("billing_settledcharge", "billing_invoiceline"):
            sql(f"ALTER TABLE {table} ENABLE TRIGGER {table}_append_only")
        code, data = report()
    assert code == 1
    assert violations(data, "I7")[0]["detail"].startswith("series INV-2026")
    i8 = violations(data, "I8")
    assert {v["wallet_id"] for v in i8} == {str(wallet.id)}
    assert any("missed by INV-2026-000001" in v["detail"] for v in i8)


def test_deep_rederives_totals_from_the_reservation_record(three_wallets, buy_server):
    wallet = three_wallets[0]
    buy_server(wallet)
    bus.deliver_pending()
    sql("SET CONSTRAINTS ALL IMMEDIATE")
    sql("ALTER TABLE billing_reservation DISABLE TRIGGER billing_reservation_append_only")
    sql(
        "UPDATE billing_reservation SET amount = amount + 1 WHERE wallet_id = %s AND kind = 'capture'",
        wallet.id,
    )
    sql("ALTER TABLE billing_reservation ENABLE TRIGGER billing_reservation_append_only")
    assert report()[0] == 0  # the running totals still agree with the ledger
    code, data = report("--deep")
    assert code == 1
    assert {v["wallet_id"] for v in violations(data, "I3")} == {str(wallet.id)}
    assert any("differs from its entry" in v["detail"] for v in violations(data, "I5"))


def test_a_disabled_append_only_trigger_is_reported(db):
    sql("ALTER TABLE billing_ledgerentry DISABLE TRIGGER billing_ledgerentry_append_only")
    code, data = report()
    assert code == 1
    assert [v["detail"] for v in violations(data, "I6")] == ["billing_ledgerentry"]


def test_an_event_marked_undelivered_again_is_redelivered_harmlessly(three_wallets, buy_server, clock):
    wallet = three_wallets[0]
    buy_server(wallet)
    bus.deliver_pending()
    wallet.refresh_from_db()
    sql(
        "UPDATE contracts_outboxmessage SET status = 'pending', delivered_at = NULL "
        "WHERE event_type = 'ChargesRecorded'"
    )
    clock.shift(dt.timedelta(hours=1))
    code, data = report()
    assert code == 1
    assert [v["wallet_id"] for v in violations(data, "I5")] == [str(wallet.id)]
    assert {v["wallet_id"] for v in violations(data, "I4")} == {str(wallet.id)}  # counted as pending too

    code, data = report("--fix")
    assert code == 0  # the handler is idempotent: delivered again, booked once
    assert Wallet.objects.get(pk=wallet.id).balance == wallet.balance
    assert LedgerEntry.objects.filter(wallet=wallet, kind="charge").count() == 1
