"""For migrations that alter an append-only table (not a migration: the loader skips
modules whose name starts with an underscore).

SQLite cannot alter a column in place: Django rebuilds the table (a new table, a copy,
a rename), and the rebuild drops the table's triggers with the old table. On SQLite such
an operation is wrapped so that the append-only triggers are installed again after it,
whichever way the migration runs. PostgreSQL alters in place and keeps its triggers.
"""

from __future__ import annotations

from django.db import migrations

from iaas.common.append_only import make_append_only


def _on_sqlite(tables: tuple[str, ...], forward: bool):
    operation = make_append_only(*tables)

    def reinstall(apps, schema_editor):
        if schema_editor.connection.vendor != "sqlite":
            return
        operation.reverse_code(apps, schema_editor)  # drop what is left, if anything
        operation.code(apps, schema_editor)

    def nothing(apps, schema_editor):
        return None

    return migrations.RunPython(reinstall, nothing) if forward else migrations.RunPython(nothing, reinstall)


def keeping_append_only(tables: tuple[str, ...], operations: list) -> list:
    """``operations`` followed (and, unapplied, preceded) by reinstalling the SQLite
    triggers of ``tables``."""
    return [_on_sqlite(tables, forward=False), *operations, _on_sqlite(tables, forward=True)]
