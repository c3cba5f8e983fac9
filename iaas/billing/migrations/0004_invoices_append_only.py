"""Issued invoices are immutable, in the database itself, like the ledger (I6, 0002):
UPDATE and DELETE on invoices and their lines raise. Reuses 0002's iaas_refuse_change().

Per-row triggers, so TRUNCATE (Django's test flush) still works. The counter table
(billing_invoiceseries) is updated on every issue and has no trigger.
"""

from django.db import migrations

TABLES = ("billing_invoice", "billing_invoiceline")


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for table in TABLES:
        if vendor == "postgresql":
            schema_editor.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION iaas_refuse_change();"
            )
        elif vendor == "sqlite":
            for operation in ("UPDATE", "DELETE"):
                schema_editor.execute(
                    f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END;"
                )


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for table in TABLES:
        if vendor == "postgresql":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};")
        elif vendor == "sqlite":
            for operation in ("update", "delete"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation};")


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_invoices")]
    operations = [migrations.RunPython(forward, backward)]
