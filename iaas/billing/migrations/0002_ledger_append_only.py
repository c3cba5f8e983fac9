"""I6: the ledger is append-only, in the database itself. UPDATE and DELETE raise.

Per-row triggers, so TRUNCATE (Django's test flush) still works. A later migration
that must rewrite the table disables the trigger around the rewrite, explicitly.
"""

from django.db import migrations

POSTGRES_FORWARD = """
CREATE OR REPLACE FUNCTION iaas_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_ledgerentry_append_only
    BEFORE UPDATE OR DELETE ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION iaas_refuse_change();
"""

POSTGRES_BACKWARD = """
DROP TRIGGER IF EXISTS billing_ledgerentry_append_only ON billing_ledgerentry;
"""

SQLITE_FORWARD = [
    """CREATE TRIGGER billing_ledgerentry_no_update BEFORE UPDATE ON billing_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'billing_ledgerentry is append-only: UPDATE refused'); END;""",
    """CREATE TRIGGER billing_ledgerentry_no_delete BEFORE DELETE ON billing_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'billing_ledgerentry is append-only: DELETE refused'); END;""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS billing_ledgerentry_no_update;",
    "DROP TRIGGER IF EXISTS billing_ledgerentry_no_delete;",
]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_FORWARD, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_BACKWARD)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_BACKWARD:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
