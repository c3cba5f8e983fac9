"""No two charges of one server overlap in time, held by the database (PostgreSQL):
an exclusion constraint over (subject_id, [period_start, period_end)). Each hour of a
server is charged once, whichever path charged it (the first hour, a settlement run
closing usage, a resumption), so a bug that charges an hour twice fails its
transaction instead of billing the customer twice.

Half-open ranges (tstzrange's default '[)'): a charge ending when the next one starts
is adjacent, not overlapping; an empty period overlaps nothing. btree_gist lets the
GiST index compare the UUID with ``=``; it is a trusted extension, so the app's role
needs only CREATE on its database.

Skipped on SQLite (the embedded default): there reconcile checks the same rule (under
I11), as it does here when the constraint is missing. A database that already holds
overlapping charges fails this migration: they are a double charge for a person to
look at, not something to paper over.
"""

from django.db import migrations

TABLE = "cloud_charge"
CONSTRAINT = "cloud_charge_no_overlap"

POSTGRES_FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS btree_gist",
    f"ALTER TABLE {TABLE} ADD CONSTRAINT {CONSTRAINT} "
    "EXCLUDE USING gist (subject_id WITH =, tstzrange(period_start, period_end) WITH &&)",
]

# The extension stays: another table may use it.
POSTGRES_BACKWARD = [f"ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS {CONSTRAINT}"]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in POSTGRES_FORWARD:
            schema_editor.execute(statement, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in POSTGRES_BACKWARD:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("cloud", "0005_server_wallet_keyset")]
    operations = [migrations.RunPython(forward, backward)]
