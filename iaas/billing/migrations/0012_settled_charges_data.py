"""Carry the books into aggregate settlement's shape: one SettledCharge per charge ledger
entry booked so far (each settled exactly one charge, its ``source_id``), on the invoice
line that pointed at the entry; each refund then points at the settled charge its entry
booked.

Refunds are append-only (0009): their trigger is disabled around the one UPDATE that
fills the new link, explicitly (ARCHITECTURE.md, pitfalls), with the deferred foreign
key checks made immediate first, since PostgreSQL refuses ALTER TABLE on a table with
pending trigger events. On SQLite the triggers are dropped and installed again.

The way back works while every entry and every line has one charge (the shape this
migration makes); once a settlement has grouped charges, it refuses, and says why.
"""

from django.db import migrations

from iaas.common.append_only import make_append_only

SETTLE_EXISTING = """
INSERT INTO billing_settledcharge (charge_id, wallet_id, context, amount, currency, subject_id,
    description, period_start, period_end, transaction_date, ledger_entry_id, invoice_line_id,
    created_at)
SELECT COALESCE(l.source_id, l.id), l.wallet_id, l.context, -l.amount, w.currency, NULL,
       l.description, NULL, NULL, l.transaction_date, l.id, il.id, l.posted_at
FROM billing_ledgerentry l
JOIN billing_wallet w ON w.id = l.wallet_id
LEFT JOIN billing_invoiceline il ON il.ledger_entry_id = l.id
WHERE l.kind = 'charge'
"""

REFUNDS_TO_CHARGES = """
UPDATE billing_refund SET charge_id = (
    SELECT c.charge_id FROM billing_settledcharge c WHERE c.ledger_entry_id = billing_refund.charge_entry_id
)
"""

# The way back.
GROUPED = """
SELECT (SELECT COUNT(*) FROM (SELECT ledger_entry_id FROM billing_settledcharge
                              GROUP BY ledger_entry_id HAVING COUNT(*) > 1) e),
       (SELECT COUNT(*) FROM (SELECT invoice_line_id FROM billing_settledcharge
                              WHERE invoice_line_id IS NOT NULL
                              GROUP BY invoice_line_id HAVING COUNT(*) > 1) l)
"""
REFUNDS_TO_ENTRIES = """
UPDATE billing_refund SET charge_entry_id = (
    SELECT c.ledger_entry_id FROM billing_settledcharge c WHERE c.charge_id = billing_refund.charge_id
), charge_id = NULL
"""
LINES_TO_ENTRIES = """
UPDATE billing_invoiceline SET ledger_entry_id = (
    SELECT c.ledger_entry_id FROM billing_settledcharge c WHERE c.invoice_line_id = billing_invoiceline.id
)
"""
FORGET_SETTLED = "DELETE FROM billing_settledcharge"


def _rewrite(schema_editor, table: str, statements: list[str]) -> None:
    """Run ``statements`` on the append-only ``table`` with its trigger out of the way."""
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        schema_editor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only")
        for statement in statements:
            schema_editor.execute(statement)
        schema_editor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {table}_append_only")
        return
    guard = make_append_only(table)
    if vendor == "sqlite":
        guard.reverse_code(None, schema_editor)
    for statement in statements:
        schema_editor.execute(statement)
    if vendor == "sqlite":
        guard.code(None, schema_editor)


def forward(apps, schema_editor):
    schema_editor.execute(SETTLE_EXISTING)
    _rewrite(schema_editor, "billing_refund", [REFUNDS_TO_CHARGES])


def backward(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(GROUPED)
        grouped_entries, grouped_lines = cursor.fetchone()
    if grouped_entries or grouped_lines:
        raise RuntimeError(
            f"{grouped_entries} ledger entries and {grouped_lines} invoice lines carry several charges: "
            "the shape before billing 0012 (one charge per entry and per line) cannot hold them"
        )
    _rewrite(schema_editor, "billing_refund", [REFUNDS_TO_ENTRIES])
    _rewrite(schema_editor, "billing_invoiceline", [LINES_TO_ENTRIES])
    schema_editor.execute(FORGET_SETTLED)


class Migration(migrations.Migration):
    dependencies = [("billing", "0011_settled_charges")]
    operations = [migrations.RunPython(forward, backward)]
