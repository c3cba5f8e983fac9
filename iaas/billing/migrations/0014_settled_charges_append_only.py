"""Settled charges are a log like the ledger (I5, I6): rows are only ever inserted, with
one exception the database enforces too: ``invoice_line`` is set once, from NULL, by the
transaction that issues the invoice (I8: a charge lands on exactly one line). Any other
UPDATE, and every DELETE, raises.

Per-row triggers, so TRUNCATE (Django's test flush) still works. Named like the other
append-only tables' triggers (``<table>_append_only`` on PostgreSQL, ``<table>_no_update``
and ``<table>_no_delete`` on SQLite), so reconcile's I6 check finds them.
"""

from django.db import migrations

POSTGRES_FORWARD = [
    """
CREATE OR REPLACE FUNCTION iaas_settled_charge_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.invoice_line_id IS NULL AND NEW.invoice_line_id IS NOT NULL
       AND to_jsonb(NEW) - 'invoice_line_id' = to_jsonb(OLD) - 'invoice_line_id' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused (only invoice_line_id may be set, once)',
        TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql
""",
    """
CREATE TRIGGER billing_settledcharge_append_only
    BEFORE UPDATE OR DELETE ON billing_settledcharge
    FOR EACH ROW EXECUTE FUNCTION iaas_settled_charge_guard()
""",
]
POSTGRES_BACKWARD = [
    "DROP TRIGGER IF EXISTS billing_settledcharge_append_only ON billing_settledcharge",
    "DROP FUNCTION IF EXISTS iaas_settled_charge_guard()",
]

# Every column but invoice_line_id stays as it was (IS: equal, NULLs included).
UNCHANGED = " AND ".join(
    f"NEW.{column} IS OLD.{column}"
    for column in (
        "charge_id",
        "wallet_id",
        "context",
        "amount",
        "currency",
        "subject_id",
        "description",
        "period_start",
        "period_end",
        "transaction_date",
        "ledger_entry_id",
        "created_at",
    )
)
REFUSED = "billing_settledcharge is append-only: UPDATE refused (only invoice_line_id may be set, once)"
SQLITE_FORWARD = [
    f"""CREATE TRIGGER billing_settledcharge_no_update BEFORE UPDATE ON billing_settledcharge
        WHEN NOT (OLD.invoice_line_id IS NULL AND NEW.invoice_line_id IS NOT NULL AND {UNCHANGED})
        BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END;""",
    """CREATE TRIGGER billing_settledcharge_no_delete BEFORE DELETE ON billing_settledcharge
       BEGIN SELECT RAISE(ABORT, 'billing_settledcharge is append-only: DELETE refused'); END;""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS billing_settledcharge_no_update",
    "DROP TRIGGER IF EXISTS billing_settledcharge_no_delete",
]


def _run(schema_editor, postgres: list[str], sqlite: list[str]) -> None:
    vendor = schema_editor.connection.vendor
    for statement in {"postgresql": postgres, "sqlite": sqlite}.get(vendor, []):
        schema_editor.execute(statement, params=None)


def forward(apps, schema_editor):
    _run(schema_editor, POSTGRES_FORWARD, SQLITE_FORWARD)


def backward(apps, schema_editor):
    _run(schema_editor, POSTGRES_BACKWARD, SQLITE_BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("billing", "0013_settled_charges_finish")]
    operations = [migrations.RunPython(forward, backward)]
