"""Database backstops a selling context's migrations install, written once (ARCHITECTURE.md:
database-only backstops go in migrations that run only on PostgreSQL; on the embedded
SQLite default, reconcile checks the same rules)."""

from __future__ import annotations

from django.db import migrations


def no_overlapping_charges(app_label: str) -> migrations.RunPython:
    """No two charges of one service overlap in time, held by PostgreSQL: an exclusion
    constraint over (subject_id, [period_start, period_end)) on ``<app_label>_charge``,
    named as ``iaas.spending.checks.no_overlap_constraint`` expects. Half-open ranges: a
    charge ending when the next one starts is adjacent, not overlapping; an empty
    period overlaps nothing. btree_gist (a trusted extension) lets the GiST index
    compare the UUID with ``=``."""
    table = f"{app_label}_charge"
    constraint = f"{table}_no_overlap"

    def forward(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS btree_gist", params=None)
            schema_editor.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {constraint} "
                "EXCLUDE USING gist (subject_id WITH =, tstzrange(period_start, period_end) WITH &&)",
                params=None,
            )

    def backward(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            # The extension stays: another table may use it.
            schema_editor.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {constraint}", params=None)

    return migrations.RunPython(forward, backward)
