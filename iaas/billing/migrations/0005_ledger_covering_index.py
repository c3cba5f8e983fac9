"""The ledger's (wallet, sequence) unique index also carries amount, balance_after and
kind (INCLUDE), on PostgreSQL: reconciliation reads each wallet's chain in sequence
order from the index alone (an index-only scan, no sort, no visit to the table), which
is what keeps it near the cost of a plain GROUP BY over the ledger.

The same constraint, same name, so the model state does not change; SQLite, which has
no covering indexes, keeps the plain unique constraint. Building the index does not
rewrite the table (the append-only trigger is not involved). On a large production
ledger, build it CONCURRENTLY by hand first and fake this migration.
"""

from django.db import migrations

FORWARD = """
ALTER TABLE billing_ledgerentry
    DROP CONSTRAINT ledger_sequence_unique,
    ADD CONSTRAINT ledger_sequence_unique UNIQUE (wallet_id, sequence) INCLUDE (amount, balance_after, kind)
"""
BACKWARD = """
ALTER TABLE billing_ledgerentry
    DROP CONSTRAINT ledger_sequence_unique,
    ADD CONSTRAINT ledger_sequence_unique UNIQUE (wallet_id, sequence)
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_invoices_append_only")]
    operations = [migrations.RunPython(forward, backward)]
