"""Append-only tables, enforced by the database: a migration operation that installs
per-row triggers refusing UPDATE and DELETE (iaas_refuse_change(), created by billing's
migration 0002, on PostgreSQL; RAISE triggers on SQLite). Per-row, so TRUNCATE (Django's
test flush) still works. Migrations import this: keep its behaviour stable."""

from __future__ import annotations

from django.db import migrations


def _install(tables: tuple[str, ...], schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    for table in tables:
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


def _remove(tables: tuple[str, ...], schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    for table in tables:
        if vendor == "postgresql":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};")
        elif vendor == "sqlite":
            for operation in ("update", "delete"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation};")


def make_append_only(*tables: str) -> migrations.RunPython:
    """The migration operation that makes ``tables`` append-only (and back)."""
    return migrations.RunPython(
        lambda apps, schema_editor: _install(tables, schema_editor),
        lambda apps, schema_editor: _remove(tables, schema_editor),
    )
