"""Data migrations that carry existing rows into a new shape."""

from __future__ import annotations

import datetime as dt
import uuid

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
