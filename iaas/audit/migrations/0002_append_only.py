"""The history is append-only in the database: UPDATE and DELETE raise (per-row
triggers, so a test flush's TRUNCATE still works).

The trigger function is billing's (its migration 0002 creates it); it is created here
too, identically and idempotently, so that this shared app needs no context's
migration. Going back drops the trigger only: billing's tables still use the function.
"""

from django.db import migrations

from iaas.common.append_only import make_append_only

REFUSE_CHANGE = """
CREATE OR REPLACE FUNCTION iaas_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
"""


def create_refuse_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(REFUSE_CHANGE, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [
        migrations.RunPython(create_refuse_function, migrations.RunPython.noop),
        make_append_only("audit_changerecord"),
    ]
