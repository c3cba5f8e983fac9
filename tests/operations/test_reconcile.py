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
from iaas.cloud.models import Charge, Usage
from iaas.contracts import bus
from iaas.contracts.models import OutboxMessage
from iaas.operations.reconciliation import check_i11
from tests.factories import usage_accrued


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
    for invariant in ("I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9", "I11", "I12"):
        assert f"  {invariant}  ok" in out
    assert out.index("  I9  ok") < out.index("  I11  ok")  # in their numeric order
    assert "all 11 invariants hold" in out
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
    for invariant in ("I2", "I6", "I7", "I8", "I9", "I11"):
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
    assert data["fix"]["delivered"] == 2  # and Cloud told which entry settled its charge
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
    assert "--fix: delivered 2 event(s)" in out  # the charge, then Cloud told its entry
    assert "all 11 invariants hold" in out


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


# --- Usage accrued in place (I4 counts it) and I11 ----------------------------------------


@pytest.fixture
def metered(three_wallets, buy_server, clock):
    """Three customers with a server each, its first hour settled, then five more hours
    metered into the month's usage record and spent out of Cloud's allowance, no
    settlement run yet: Billing holds that money and has no charge for it."""
    servers = []
    for wallet in three_wallets:
        servers.append(buy_server(wallet))
    bus.deliver_pending()
    clock.shift(dt.timedelta(hours=6))
    for server in servers:
        assert usage_accrued(server, hours=5) == 5 * 4
    return three_wallets, servers


def test_usage_accrued_and_not_yet_closed_is_no_violation(metered):
    wallets, servers = metered
    record = Usage.objects.get(service_id=servers[0].id)
    assert (record.hours, record.amount, record.closed_hours, record.closed_amount) == (6, 24, 1, 4)
    code, out = run()
    assert code == 0, out
    assert "  I4  ok" in out
    assert "  I11  ok" in out
    wallet = Wallet.objects.get(pk=wallets[0].id)
    assert (wallet.balance, wallet.reserved) == (10_000 - 4, 20)  # the hours accrued are held, not booked


def test_accrued_usage_the_allowance_did_not_pay_for_is_an_i4_violation(metered):
    wallets, servers = metered
    # Five more hours in the record, as if metered, with no spend out of the allowance
    # (the list amount follows, so the record agrees with itself: I11 holds).
    sql(
        "UPDATE cloud_usage SET hours = hours + 5, list_amount = list_amount + 20, "
        "list_exact = list_exact + 20, amount = amount + 20 WHERE service_id = %s",
        servers[1].id,
    )
    code, data = report()
    assert code == 1
    i4 = violations(data, "I4")
    assert [(v["wallet_id"], v["expected"], v["found"]) for v in i4 if "spent" in v["detail"]] == [
        (str(wallets[1].id), 24, 44)  # spent 4 + 20; settled 4, accrued 40
    ]
    assert [(v["expected"], v["found"]) for v in i4 if "hold" in v["detail"]] == [(40, 20)]
    assert violations(data, "I11") == []


def test_paid_until_moved_without_accruing_is_an_i11_violation(metered):
    wallets, servers = metered
    sql("SET session_replication_role = replica")
    sql("UPDATE cloud_server SET paid_until = paid_until + interval '3 hours' WHERE id = %s", servers[2].id)
    sql("SET session_replication_role = DEFAULT")
    code, data = report()
    assert code == 1
    (violation,) = violations(data, "I11")
    record = Usage.objects.get(service_id=servers[2].id)
    assert violation["wallet_id"] == str(wallets[2].id)
    assert violation["detail"].startswith(f"cloud: paid_until of {servers[2].id} differs from")
    assert dt.datetime.fromisoformat(violation["expected"]) == record.accrued_until
    assert dt.datetime.fromisoformat(violation["found"]) == record.accrued_until + dt.timedelta(hours=3)
    assert violations(data, "I4") == []


@pytest.mark.parametrize(
    ("drift", "detail"),
    [
        (
            "list_amount = list_amount + 4, list_exact = list_exact + 4",
            "amount is not min(cap 2000 + refunded 0, list 28)",
        ),
        ("list_exact = list_exact + 4", "list amount is not the exact list 28/1 rounded once"),
        ("close_due_at = NULL", "20 spent and not closed, no settlement due"),
        ("closed_until = accrued_until", "open hours and the span not yet closed disagree"),
    ],
)
def test_a_usage_record_that_disagrees_with_itself_is_an_i11_violation(metered, drift, detail):
    wallets, servers = metered
    sql(f"UPDATE cloud_usage SET {drift} WHERE service_id = %s", servers[0].id)
    code, data = report()
    assert code == 1
    (violation,) = violations(data, "I11")
    assert violation["wallet_id"] == str(wallets[0].id)
    month = f"{Usage.objects.get(service_id=servers[0].id).month:%Y-%m}"
    assert violation["detail"] == f"cloud: usage of {servers[0].id} in {month}: {detail}"
    assert violations(data, "I4") == []


def test_a_usage_record_on_another_wallet_is_reported_under_i11_and_i4(metered):
    wallets, servers = metered
    sql("UPDATE cloud_usage SET wallet_id = %s WHERE service_id = %s", wallets[1].id, servers[0].id)
    code, data = report()
    assert code == 1
    (violation,) = violations(data, "I11")
    assert violation["detail"].endswith("is not on its service's wallet and owner")
    assert violation["expected"]["wallet"] == str(wallets[0].id)
    assert {v["wallet_id"] for v in violations(data, "I4")} == {str(wallets[0].id), str(wallets[1].id)}


def test_a_usage_record_of_no_service_is_an_i11_violation(metered):
    wallets, servers = metered
    sql("UPDATE cloud_usage SET service_id = gen_random_uuid() WHERE service_id = %s", servers[2].id)
    (violation,) = check_i11()
    assert (violation.wallet_id, violation.expected, violation.found) == (wallets[2].id, "a service", None)
    assert violation.detail.endswith("belongs to no service")


def test_a_refund_in_a_capped_month_is_no_i11_violation(catalog, wallet, customer, clock):
    """A refund makes room under the cap for the hours that follow; the hours already past
    the cap stay free. So the amount is min(cap + refunded, list) only while nothing was
    refunded, and between min(cap, list) and min(cap + refunded, list) after."""
    from iaas.cloud import services

    clock.move_to(dt.datetime(2026, 5, 1, tzinfo=dt.UTC))
    server = services.server_create(
        owner_id=customer.id, wallet_id=wallet.id, name="s", plan_id="s-1vcpu-1gb"
    )
    usage_accrued(server, hours=600)  # past the 500 cap: 100 hours free
    sql(
        "UPDATE cloud_usage SET closed_amount = amount, closed_hours = hours, closed_until = accrued_until, "
        "close_due_at = NULL, refunded = 50 WHERE service_id = %s",
        server.id,
    )
    record = Usage.objects.get(service_id=server.id)
    assert (record.hours, record.list_amount, record.amount, record.refunded) == (601, 601, 500, 50)
    assert check_i11() == []
    sql(
        "UPDATE cloud_usage SET amount = 551, closed_amount = 551, list_amount = 700, list_exact = 700 "
        "WHERE id = %s",
        record.id,
    )
    (violation,) = check_i11()
    assert (violation.expected, violation.found) == ({"at_least": 500, "at_most": 550}, 551)


def test_overlapping_charges_are_reported_when_the_constraint_is_missing(metered):
    wallets, servers = metered
    first = Charge.objects.get(subject_id=servers[0].id)
    sql("SET CONSTRAINTS ALL IMMEDIATE")  # no deferred checks pending before ALTER TABLE
    sql("ALTER TABLE cloud_charge DROP CONSTRAINT cloud_charge_no_overlap")
    assert violations(report()[1], "I11") == [
        {
            "invariant": "I11",
            "wallet_id": None,
            "expected": "exclusion constraint cloud_charge_no_overlap",
            "found": "missing",
            "detail": "cloud: cloud_charge does not refuse overlapping charges",
        }
    ]
    Charge.objects.create(
        wallet_id=first.wallet_id,
        owner_id=first.owner_id,
        amount=4,
        currency="EUR",
        description="the first hour again",
        subject_id=servers[0].id,
        period_start=first.period_start + dt.timedelta(minutes=30),
        period_end=first.period_end + dt.timedelta(minutes=30),
        transaction_date=first.period_start,
    )
    code, data = report()
    assert code == 1
    _missing, overlap = violations(data, "I11")
    assert overlap["wallet_id"] == str(wallets[0].id)
    assert f"of {servers[0].id} overlaps an earlier charge" in overlap["detail"]
    assert (
        dt.datetime.fromisoformat(overlap["expected"].removeprefix("starts at or after ")) == first.period_end
    )
