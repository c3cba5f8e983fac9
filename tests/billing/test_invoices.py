"""issue_invoices: one invoice per customer and currency and month, gapless numbers,
immutable, a line per service and month, every settled charge on exactly one line (I7,
I8), and no invoice for a month whose usage or charges are still on their way."""

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

from iaas.billing.models import Invoice, InvoiceSeries, SettledCharge
from iaas.cloud import services as cloud_services
from iaas.cloud.spending import spender as cloud_spender
from iaas.common.periods import Month
from iaas.contracts import billing, bus, selling
from iaas.contracts.types import Money
from iaas.hosting import services as hosting_services
from tests.factories import UserFactory, billing_consistent, funded_wallet, record_charges

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
        charges = SettledCharge.objects.filter(wallet=wallet)
        assert invoice.total == sum(charge.amount for charge in charges) > 0
        lines = list(invoice.lines.order_by("context"))
        assert [[c.charge_id for c in line.charges.all()] for line in lines] == [
            [charge.charge_id] for charge in charges.order_by("context")
        ]
        assert [line.subject_id for line in lines] == [c.subject_id for c in charges.order_by("context")]
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


@pytest.fixture
def may_usage(db, wallet):
    """May's closed usage as a settlement run reports it: three days of server A, two of
    server B, a day of server A in April that settled late (no April invoice took it),
    and two charges of no service."""
    server_a, server_b = uuid.uuid4(), uuid.uuid4()
    may = dt.datetime(2026, 5, 1, tzinfo=UTC)
    record_charges(wallet, [96, 96, 40], subject_id=server_a, start=may, description="Server a, day")
    record_charges(wallet, [10, 20], subject_id=server_b, start=may + dt.timedelta(days=20))
    record_charges(wallet, [7], subject_id=server_a, start=may - dt.timedelta(days=2))
    record_charges(wallet, [5, 6], start=may + dt.timedelta(days=9), description="Support hour")
    bus.deliver_pending()
    return wallet, server_a, server_b


def test_one_line_per_service_and_month_each_the_sum_of_its_charges(may_usage):
    _, server_a, server_b = may_usage
    with time_machine.travel(JUNE_1, tick=False):
        issue("--period", "2026-05")
    invoice = Invoice.objects.get()
    lines = {
        (line.subject_id, line.amount): (
            line.description,
            line.period_start,
            line.period_end,
            line.charges.count(),
        )
        for line in invoice.lines.all()
    }
    may = dt.datetime(2026, 5, 1, tzinfo=UTC)
    day = dt.timedelta(days=1)
    assert lines == {
        (server_a, 232): ("Server a, day 1 and 2 more charges", may, may + 3 * day, 3),
        (server_b, 30): ("Server vm: usage 1 and 1 more charge", may + 20 * day, may + 22 * day, 2),
        (server_a, 7): ("Server vm: usage 1", may - 2 * day, may - day, 1),  # April's, late
        (None, 5): ("Support hour 1", may + 9 * day, may + 10 * day, 1),
        (None, 6): ("Support hour 2", may + 10 * day, may + 11 * day, 1),
    }
    assert invoice.total == 232 + 30 + 7 + 5 + 6
    assert not SettledCharge.objects.filter(invoice_line__isnull=True).exists()
    billing_consistent()  # I8 included: each charge on exactly one line, lines their sums


def test_reconcile_finds_a_line_that_is_not_its_charges(may_usage):
    with time_machine.travel(JUNE_1, tick=False):
        issue("--period", "2026-05")
    charge = SettledCharge.objects.filter(amount=40).get()
    with transaction.atomic(), connection.cursor() as cursor:  # past the trigger, as a superuser could
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            "UPDATE billing_settledcharge SET invoice_line_id = NULL WHERE charge_id = %s", [charge.pk]
        )
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
    i8 = billing.check_invariants()["I8"]
    assert {v.detail for v in i8} == {
        f"charge {charge.pk} missed by INV-2026-000001",
        f"INV-2026-000001: line {charge.invoice_line_id} differs from its charges",
    }


def test_a_dry_run_counts_the_lines_it_would_issue(may_usage):
    wallet, _, _ = may_usage
    with time_machine.travel(JUNE_1, tick=False):
        summary = json.loads(issue("--period", "2026-05", "--dry-run", "--json"))
    [draft] = summary["would_issue"]
    assert (draft["wallet_id"], draft["lines"], draft["total"]) == (str(wallet.id), 5, 280)
    assert not Invoice.objects.exists()


class OpenUsage:
    """A selling context whose usage of the month is not closed into charges yet."""

    def __init__(self, name: str, records: int) -> None:
        self.name, self.records, self.asked = name, records, []

    def open_usage_before(self, *, moment: dt.datetime) -> int:
        self.asked.append(moment)
        return self.records


def test_refuses_while_a_context_has_usage_of_the_month_not_closed(may_charges, monkeypatch):
    storage = OpenUsage("storage", 3)
    monkeypatch.setitem(selling._registry, "storage", storage)
    with time_machine.travel(JUNE_1, tick=False):
        with pytest.raises(CommandError, match=r"storage has 3 usage record\(s\) of 2026-05") as refused:
            issue("--period", "2026-05")
        assert refused.value.returncode == 2
        assert storage.asked == [Month(2026, 5).end]
        assert not Invoice.objects.exists()
        storage.records = 0  # its settlement run closed them
        issue("--period", "2026-05")
    assert Invoice.objects.count() == 1


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
        bus.deliver_pending()  # the invoices, to the customer's notifications
    june = Invoice.objects.get(period_start=Month(2026, 6).start)
    assert june.number == "INV-2026-000002"
    assert {line.description for line in june.lines.all()} == {
        "late hour",
        "Server late (s-2vcpu-4gb), first hour",
    }
    assert not SettledCharge.objects.filter(invoice_line__isnull=True).exists()
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
        # A charge's line is set once, by the issue; never moved, never unset.
        ("UPDATE billing_settledcharge SET invoice_line_id = NULL", []),
        (
            "UPDATE billing_settledcharge SET invoice_line_id = "
            "(SELECT MIN(id::text)::uuid FROM billing_invoiceline)",
            [],
        ),
    ]
    for sql, params in statements:
        with (
            pytest.raises(DatabaseError, match="append-only"),  # refused by the triggers
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
    bus.deliver_pending()  # the invoices' InvoiceIssued, to the customers' notifications
    assert_invariants()
