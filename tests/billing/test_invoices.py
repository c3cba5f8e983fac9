"""issue_invoices: one invoice per customer and currency and month, gapless numbers,
immutable, every settled charge on exactly one line (I7, I8)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, connections, transaction

from iaas.billing.models import Invoice, InvoiceLine, InvoiceSeries, LedgerEntry
from iaas.cloud import services as cloud_services
from iaas.cloud.spending import spender as cloud_spender
from iaas.common.periods import Month
from iaas.contracts import bus
from iaas.contracts.types import Money
from iaas.hosting import services as hosting_services
from tests.factories import UserFactory, funded_wallet

UTC = dt.UTC
MAY_10 = dt.datetime(2026, 5, 10, 10, 0, tzinfo=UTC)
JUNE_1 = dt.datetime(2026, 6, 1, 1, 0, tzinfo=UTC)


def issue(*args: str) -> str:
    out = StringIO()
    call_command("issue_invoices", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def buy_server(wallet, name: str = "web1"):
    return cloud_services.server_create(
        owner_id=wallet.owner_id, wallet_id=wallet.id, name=name, plan_id="s-2vcpu-4gb"
    )


def buy_hosting(wallet, domain: str = "example.com"):
    return hosting_services.subscription_create(
        owner_id=wallet.owner_id, wallet_id=wallet.id, domain=domain, plan_id="web-starter"
    )


@pytest.fixture
def may_charges(db, wallet):
    with time_machine.travel(MAY_10, tick=False):
        buy_server(wallet)
        buy_hosting(wallet)
        bus.deliver_pending()
    return wallet


def test_a_month_is_invoiced_once_with_every_settled_charge(may_charges, assert_invariants):
    wallet = may_charges
    with time_machine.travel(JUNE_1, tick=False):
        output = issue("--period", "2026-05")
        invoice = Invoice.objects.get()
        assert invoice.number == "INV-2026-000001"
        assert (invoice.owner_id, invoice.currency) == (wallet.owner_id, "EUR")
        assert (invoice.period_start, invoice.period_end) == (Month(2026, 5).start, Month(2026, 6).start)
        charges = LedgerEntry.objects.filter(wallet=wallet, kind="charge")
        assert invoice.total == -sum(charge.amount for charge in charges) > 0
        lines = list(invoice.lines.order_by("transaction_date"))
        assert sorted(line.ledger_entry_id for line in lines) == sorted(c.id for c in charges)
        assert {line.context for line in lines} == {"cloud", "hosting"}
        assert all(line.transaction_date == MAY_10 for line in lines)
        assert "INV-2026-000001" in output
        assert "issued 1 invoice(s)" in output

        again = issue("--period", "2026-05")
        assert "issued 0 invoice(s)" in again
        assert Invoice.objects.count() == 1
        assert InvoiceSeries.objects.get(pk="INV-2026").last_number == 1
        assert_invariants()


def test_one_invoice_per_customer_and_currency_numbered_in_order(db):
    with time_machine.travel(MAY_10, tick=False):
        first = funded_wallet(amount=10_000)
        second = funded_wallet(amount=10_000)
        second_usd = funded_wallet(second.owner, amount=10_000, currency="USD")
        for wallet in (first, second):
            buy_server(wallet)
        with transaction.atomic():  # a USD charge (the catalog is in EUR)
            buy_server(second)
            cloud_spender.spend(
                wallet_id=second_usd.id,
                owner_id=second.owner_id,
                price=Money(300, "USD"),
                description="USD service",
                subject_id=uuid.uuid4(),  # another service: an hour of a server is charged once
                period_start=MAY_10,
                period_end=MAY_10 + dt.timedelta(hours=1),
            )
        bus.deliver_pending()
    with time_machine.travel(JUNE_1, tick=False):
        issue("--period", "2026-05")
    invoices = list(Invoice.objects.order_by("sequence"))
    assert [i.number for i in invoices] == [f"INV-2026-00000{n}" for n in (1, 2, 3)]
    assert {(i.owner_id, i.currency) for i in invoices} == {
        (first.owner_id, "EUR"),
        (second.owner_id, "EUR"),
        (second.owner_id, "USD"),
    }
    assert next(i for i in invoices if i.currency == "USD").total == 300


def test_refuses_while_charges_of_the_month_are_unsettled(db, wallet):
    with time_machine.travel(MAY_10, tick=False):
        buy_server(wallet)  # its ChargeRecorded stays in the outbox
    with time_machine.travel(JUNE_1, tick=False):
        with pytest.raises(CommandError, match="not settled yet") as refused:
            issue("--period", "2026-05")
        assert refused.value.returncode == 2
        assert not Invoice.objects.exists()
        bus.deliver_pending()
        issue("--period", "2026-05")
    assert Invoice.objects.count() == 1


def test_refuses_a_month_that_has_not_ended(db):
    with time_machine.travel(MAY_10, tick=False), pytest.raises(CommandError, match="has not ended"):
        issue("--period", "2026-05")
    with pytest.raises(CommandError, match="YYYY-MM"):
        issue("--period", "2026-13")


def test_a_charge_that_settles_late_lands_on_the_next_invoice(may_charges, assert_invariants):
    wallet = may_charges
    with time_machine.travel(JUNE_1, tick=False):
        issue("--period", "2026-05")
    # Metering at 00:30 on June 1st books the last hour of May, after May's invoice.
    late = dt.datetime(2026, 5, 31, 23, 30, tzinfo=UTC)
    with time_machine.travel(JUNE_1 + dt.timedelta(minutes=30), tick=False):
        with transaction.atomic():
            server = buy_server(wallet, "late")
            cloud_spender.spend(
                wallet_id=wallet.id,
                owner_id=wallet.owner_id,
                price=Money(4, "EUR"),
                description="late hour",
                subject_id=server.id,
                period_start=late,
                period_end=late + dt.timedelta(hours=1),
                transaction_date=late,
            )
        bus.deliver_pending()
        assert_invariants()  # not yet due: June's run takes it
    with time_machine.travel(dt.datetime(2026, 7, 1, 2, tzinfo=UTC), tick=False):
        issue("--period", "2026-06")
    june = Invoice.objects.get(period_start=Month(2026, 6).start)
    assert june.number == "INV-2026-000002"
    assert {line.description for line in june.lines.all()} == {
        "late hour",
        "Server late (s-2vcpu-4gb), first hour",
    }
    assert InvoiceLine.objects.count() == LedgerEntry.objects.filter(kind="charge").count()
    assert_invariants()


def test_dry_run_and_json(may_charges):
    with time_machine.travel(JUNE_1, tick=False):
        output = issue("--period", "2026-05", "--dry-run")
        assert "would issue 1 invoice(s)" in output
        assert not Invoice.objects.exists()
        summary = json.loads(issue("--period", "2026-05", "--json"))
    assert summary["period"] == "2026-05"
    assert [i["number"] for i in summary["issued"]] == ["INV-2026-000001"]
    assert summary["totals"] == {"EUR": Invoice.objects.get().total}


def test_issued_invoices_are_immutable_in_the_database(may_charges):
    with time_machine.travel(JUNE_1, tick=False):
        issue("--period", "2026-05")
    invoice = Invoice.objects.get()
    statements = [
        ("UPDATE billing_invoice SET total = total + 1", []),
        ("DELETE FROM billing_invoice", []),
        ("UPDATE billing_invoiceline SET amount = amount + 1", []),
        ("DELETE FROM billing_invoiceline", []),
    ]
    for sql, params in statements:
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, params)
    invoice.refresh_from_db()
    assert invoice.lines.count() == 2


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_number_without_gaps(catalog, assert_invariants):
    with time_machine.travel(MAY_10, tick=False):
        wallets = [funded_wallet(UserFactory(), amount=1_000) for _ in range(12)]
        for wallet in wallets:
            buy_server(wallet)
        bus.deliver_pending()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run():
        try:
            barrier.wait()
            issue("--period", "2026-05")
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
        finally:
            connections.close_all()

    with time_machine.travel(JUNE_1, tick=False):
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    numbers = sorted(Invoice.objects.values_list("sequence", flat=True))
    assert numbers == list(range(1, 13))
    assert Invoice.objects.values("owner_id").distinct().count() == 12
    assert InvoiceSeries.objects.get(pk="INV-2026").last_number == 12
    assert_invariants()
