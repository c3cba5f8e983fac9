"""Data migrations that carry existing rows into a new shape."""

from __future__ import annotations

import datetime as dt
import uuid
from functools import partial

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(app: str, name: str | None = None):
    """Migrate ``app`` to ``name``; without a name, every app to its latest migration
    (the schema the rest of the suite expects). Returns the historical apps."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    targets = [(app, name)] if name else executor.loader.graph.leaf_nodes()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.parametrize(
    ("app", "before", "model", "fields"),
    [
        (
            "cloud",
            "0002_catalog",
            "server",
            {"name": "web1", "plan_id": "s-1vcpu-1gb"},
        ),
        (
            "hosting",
            "0003_subscription_period_anchor",
            "subscription",
            {"domain": "example.com", "plan_id": "web-starter"},
        ),
    ],
)
def test_services_suspended_before_causes_existed_are_unpaid_since_they_stopped(
    catalog, app, before, model, fields
):
    """Before the causes were recorded only the batch runs suspended (for non-payment)."""
    owner = UserFactory()
    stopped = dt.datetime(2026, 5, 10, 12, tzinfo=dt.UTC)
    try:
        old_apps = migrate(app, before)
        Model = old_apps.get_model(app, model)
        period = {"paid_until": stopped} if app == "cloud" else {"current_period_end": stopped}
        suspended = Model.objects.create(
            owner_id=owner.id,
            wallet_id=uuid.uuid4(),
            status="suspended",
            suspended_at=stopped,
            **fields,
            **period,
        )
        active = Model.objects.create(
            owner_id=owner.id,
            wallet_id=uuid.uuid4(),
            status="active",
            **{**fields, "domain": "b.example"} if app == "hosting" else fields,
            **period,
        )
    finally:
        new_apps = migrate(app)
    Model = new_apps.get_model(app, model)
    assert Model.objects.get(pk=suspended.pk).unpaid_since == stopped
    assert Model.objects.get(pk=active.pk).unpaid_since is None


def _books_before_aggregate_settlement(apps, owner) -> dict:
    """Billing as it stood at 0010 (one ledger entry per charge, its ``source_id`` the
    charge): a top-up, a hosting month and a server hour invoiced for May, a server hour
    of June not yet invoiced, and a refund of May's server hour. Consistent, so the
    invariants can be checked after the migration."""
    Wallet = apps.get_model("billing", "Wallet")
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    Hold = apps.get_model("billing", "Hold")
    Reservation = apps.get_model("billing", "Reservation")
    InvoiceSeries = apps.get_model("billing", "InvoiceSeries")
    Invoice = apps.get_model("billing", "Invoice")
    InvoiceLine = apps.get_model("billing", "InvoiceLine")
    Refund = apps.get_model("billing", "Refund")
    may, june = dt.datetime(2026, 5, 10, tzinfo=dt.UTC), dt.datetime(2026, 6, 2, tzinfo=dt.UTC)
    wallet = Wallet.objects.create(owner_id=owner.id, currency="EUR", balance=597, ledger_sequence=5)
    charges = {"hosting": uuid.uuid4(), "may_hour": uuid.uuid4(), "june_hour": uuid.uuid4()}
    rows = [
        ("top_up", 1_000, 1_000, may, "Top-up via sandbox", "top-up:1", "", uuid.uuid4()),
        ("charge", -399, 601, may, "Hosting a.example, first month", "", "hosting", charges["hosting"]),
        ("charge", -4, 597, may, "Server web1, first hour", "", "cloud", charges["may_hour"]),
        ("charge", -4, 593, june, "Server web1, hour", "", "cloud", charges["june_hour"]),
    ]
    entries = []
    for sequence, (kind, amount, after, date, description, reference, context, source) in enumerate(rows, 1):
        entries.append(
            LedgerEntry.objects.create(
                wallet=wallet,
                sequence=sequence,
                kind=kind,
                amount=amount,
                balance_after=after,
                transaction_date=date,
                description=description,
                reference=reference or f"charge:{source}",
                context=context,
                source_id=source,
            )
        )
    TopUp = apps.get_model("billing", "TopUp")
    TopUp.objects.create(
        id=entries[0].source_id,
        wallet=wallet,
        amount=1_000,
        currency="EUR",
        status="succeeded",
        provider="sandbox",
        reference="top-up:1",
        completed_at=may,
        ledger_entry=entries[0],
    )
    for context, total in (("hosting", 399), ("cloud", 8)):
        Hold.objects.create(
            wallet=wallet, context=context, amount=0, granted_total=total, captured_total=total
        )
        Reservation.objects.create(wallet=wallet, context=context, kind="grant", amount=total)
    for entry in entries[1:]:
        Reservation.objects.create(
            wallet=wallet,
            context=entry.context,
            kind="capture",
            amount=-entry.amount,
            source_id=entry.source_id,
            ledger_entry=entry,
        )
    InvoiceSeries.objects.create(series="INV-2026", last_number=1)
    invoice = Invoice.objects.create(
        series="INV-2026",
        sequence=1,
        number="INV-2026-000001",
        owner_id=owner.id,
        wallet=wallet,
        currency="EUR",
        period_start=dt.datetime(2026, 5, 1, tzinfo=dt.UTC),
        period_end=dt.datetime(2026, 6, 1, tzinfo=dt.UTC),
        total=403,
        ledger_sequence=3,
    )
    lines = {
        entry.source_id: InvoiceLine.objects.create(
            invoice=invoice,
            ledger_entry=entry,
            description=entry.description,
            amount=-entry.amount,
            transaction_date=entry.transaction_date,
            context=entry.context,
        )
        for entry in entries[1:3]
    }
    refund_entry = LedgerEntry.objects.create(
        wallet=wallet,
        sequence=5,
        kind="refund",
        amount=4,
        balance_after=597,
        transaction_date=june,
        description="Refund of #3 (Server web1, first hour): outage",
        reference=f"refund:{entries[2].id}",
        context="cloud",
        source_id=uuid.uuid4(),
        created_by_id=owner.id,
    )
    refund = Refund.objects.create(
        id=refund_entry.source_id,
        wallet=wallet,
        charge_entry=entries[2],
        amount=4,
        reason="outage",
        created_by_id=owner.id,
        ledger_entry=refund_entry,
    )
    return {"wallet": wallet, "charges": charges, "entries": entries, "lines": lines, "refund": refund}


def test_each_charge_entry_becomes_a_settled_charge_with_its_line_and_refund():
    from iaas.contracts import billing

    owner = UserFactory()
    try:
        before = _books_before_aggregate_settlement(migrate("billing", "0010_ledger_chain_trigger"), owner)
    finally:
        apps = migrate("billing")
    SettledCharge = apps.get_model("billing", "SettledCharge")
    Refund = apps.get_model("billing", "Refund")
    charges = before["charges"]
    settled = {charge.charge_id: charge for charge in SettledCharge.objects.all()}
    assert set(settled) == set(charges.values())
    for entry in before["entries"][1:]:
        charge = settled[entry.source_id]
        assert (charge.ledger_entry_id, charge.amount, charge.context, charge.description) == (
            entry.id,
            -entry.amount,
            entry.context,
            entry.description,
        )
        assert (charge.wallet_id, charge.currency, charge.transaction_date) == (
            before["wallet"].id,
            "EUR",
            entry.transaction_date,
        )
    # May's lines now name their charges; June's hour waits for June's invoice.
    assert settled[charges["hosting"]].invoice_line_id == before["lines"][charges["hosting"]].id
    assert settled[charges["may_hour"]].invoice_line_id == before["lines"][charges["may_hour"]].id
    assert settled[charges["june_hour"]].invoice_line_id is None
    # The refund names the charge its entry booked.
    assert Refund.objects.get(pk=before["refund"].pk).charge_id == charges["may_hour"]
    found = billing.check_invariants(deep=True)
    assert not any(found.values()), found


def test_the_way_back_restores_the_links_to_entries():
    owner = UserFactory()
    try:
        before = _books_before_aggregate_settlement(migrate("billing", "0010_ledger_chain_trigger"), owner)
        migrate("billing")
        old = migrate("billing", "0010_ledger_chain_trigger")
        Refund = old.get_model("billing", "Refund")
        InvoiceLine = old.get_model("billing", "InvoiceLine")
        assert Refund.objects.get(pk=before["refund"].pk).charge_entry_id == before["entries"][2].id
        assert {line.id: line.ledger_entry_id for line in InvoiceLine.objects.all()} == {
            line.id: line.ledger_entry_id for line in before["lines"].values()
        }
    finally:
        migrate("billing")


def test_servers_that_ran_before_usage_records_get_their_months_from_their_charges(catalog):
    """Each server's charges become one closed usage record per calendar month; the hours
    the cap made free count up to paid_until; and I11 holds for what the migration built."""
    from iaas.operations.reconciliation import check_i11

    owner = UserFactory()
    at = partial(dt.datetime, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    try:
        old_apps = migrate("cloud", "0006_charge_no_overlap")
        Server = old_apps.get_model("cloud", "Server")
        Charge = old_apps.get_model("cloud", "Charge")
        Usage = old_apps.get_model("cloud", "Usage")

        def server(plan_id, paid_until, charges, **fields):
            made = Server.objects.create(
                owner_id=owner.id,
                wallet_id=uuid.uuid4(),
                name="s",
                plan_id=plan_id,
                paid_until=paid_until,
                **fields,
            )
            for start, end, amount, *refunded in charges:
                Charge.objects.create(
                    wallet_id=made.wallet_id,
                    owner_id=owner.id,
                    amount=amount,
                    refunded_amount=refunded[0] if refunded else 0,
                    currency="EUR",
                    description="old metering",
                    subject_id=made.id,
                    period_start=start,
                    period_end=end,
                    transaction_date=start,
                )
            return made

        # s-2vcpu-4gb: 4 an hour, capped at 2000 a month. Bought at 22:30 on 30 April: the
        # first hour, April's last started hour, then ten hours of May in one charge.
        across = server(
            "s-2vcpu-4gb",
            at(2026, 5, 1, 10, 30),
            [
                (at(2026, 4, 30, 22, 30), at(2026, 4, 30, 23, 30), 4),
                (at(2026, 4, 30, 23, 30), at(2026, 5, 1, 0, 30), 4),
                (at(2026, 5, 1, 0, 30), at(2026, 5, 1, 10, 30), 40),
            ],
        )
        # s-1vcpu-1gb: 1 an hour, capped at 500. 499 hours after the first reach the cap
        # (50 of them refunded since); 20 more hours ran free, never charged.
        capped = server(
            "s-1vcpu-1gb",
            at(2026, 5, 1) + 520 * hour,
            [
                (at(2026, 5, 1), at(2026, 5, 1, 1), 1),
                (at(2026, 5, 1, 1), at(2026, 5, 1) + 500 * hour, 499, 50),
            ],
        )
        # Suspended for non-payment after three hours; terminated after one.
        stopped = at(2026, 5, 2)
        suspended = server(
            "s-2vcpu-4gb",
            stopped,
            [(stopped - 3 * hour, stopped - 2 * hour, 4), (stopped - 2 * hour, stopped, 8)],
            status="suspended",
            suspended_at=stopped,
            unpaid_since=stopped,
        )
        terminated = server(
            "s-2vcpu-4gb",
            stopped + hour,
            [(stopped, stopped + hour, 4)],
            status="terminated",
            terminated_at=stopped + hour,
        )
        # Bought since usage records exist: its record stays as it is.
        recorded = server("s-2vcpu-4gb", stopped + hour, [(stopped, stopped + hour, 4)])
        Usage.objects.create(
            service_id=recorded.id,
            month=dt.date(2026, 5, 1),
            wallet_id=recorded.wallet_id,
            owner_id=owner.id,
            currency="EUR",
            hours=1,
            list_amount=4,
            cap=2000,
            amount=4,
            closed_amount=4,
            closed_hours=1,
            accrued_until=stopped + hour,
            closed_until=stopped + hour,
        )
        uncharged = server("s-2vcpu-4gb", stopped, [])
    finally:
        new_apps = migrate("cloud")
    Usage = new_apps.get_model("cloud", "Usage")

    def months(made):
        return [
            (
                f"{u.month:%Y-%m}",
                u.hours,
                u.amount,
                u.list_amount,
                u.cap,
                u.refunded,
                u.accrued_until,
                u.closed_until == u.accrued_until,
                (u.closed_hours, u.closed_amount, u.close_due_at) == (u.hours, u.amount, None),
            )
            for u in Usage.objects.filter(service_id=made.id).order_by("month")
        ]

    assert months(across) == [
        ("2026-04", 2, 8, 8, 2000, 0, at(2026, 5, 1, 0, 30), True, True),
        ("2026-05", 10, 40, 40, 2000, 0, at(2026, 5, 1, 10, 30), True, True),
    ]
    assert months(capped) == [("2026-05", 520, 500, 520, 500, 50, at(2026, 5, 1) + 520 * hour, True, True)]
    assert months(suspended) == [("2026-05", 3, 12, 12, 2000, 0, stopped, True, True)]
    assert months(terminated) == [("2026-05", 1, 4, 4, 2000, 0, stopped + hour, True, True)]
    assert [(u.hours, u.amount) for u in Usage.objects.filter(service_id=recorded.id)] == [(1, 4)]
    assert not Usage.objects.filter(service_id=uncharged.id).exists()
    u = Usage.objects.get(service_id=capped.id)
    assert (u.wallet_id, u.owner_id, u.currency) == (capped.wallet_id, owner.id, "EUR")
    # 0008: whole minor units per hour, so the exact list is the list.
    assert {(u.list_exact == u.list_amount) for u in Usage.objects.all()} == {True}
    assert check_i11() == []
