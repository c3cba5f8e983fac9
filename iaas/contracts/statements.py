"""Several writes of one purchase in one statement (the bus writes an event's outbox rows
with the change that makes it true this way): a purchase's hold, reservation and
event, or its charge, usage record and event, are each one round trip.

A ``Write`` is one INSERT (or upsert, or conditional INSERT ... SELECT) with its
parameters. ``run_together`` sends a list of them as one statement on PostgreSQL, each
but the last in a data-modifying ``WITH`` clause (PostgreSQL runs each exactly once and
to completion, all against one snapshot: the writes must touch different tables), and
one after the other elsewhere: SQLite, the embedded default, has no data-modifying
``WITH``. Both give the same rows; ``IAAS_FOLD_STATEMENTS = False`` runs the portable
way on PostgreSQL too, so tests hold the two to the same results.

Statements are counted as PostgreSQL sees them (ARCHITECTURE.md): a folded statement is
one statement, with no function or ``DO`` block to hide others in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import CharField, Field, Model, TextField
from django.db.models.expressions import DatabaseDefault


@dataclass(frozen=True)
class Write:
    """One write: ``sql`` with its ``params`` (``%s`` placeholders). ``returning``: the
    statement ends in a RETURNING clause whose rows the caller reads."""

    sql: str
    params: tuple = ()
    returning: bool = False


def folding() -> bool:
    """Whether writes run together as one statement (PostgreSQL, unless the setting
    asks for the portable way)."""
    return connection.vendor == "postgresql" and getattr(settings, "IAAS_FOLD_STATEMENTS", True)


def run_together(*writes: Write) -> list[tuple]:
    """Run the writes, in order, as one statement where the database allows it; the
    rows the last one returns (RETURNING), or [] when it returns none."""
    writes = tuple(write for write in writes if write is not None)
    if not writes:
        return []
    if len(writes) > 1 and folding():
        clauses = ", ".join(f"w{i} AS ({write.sql})" for i, write in enumerate(writes[:-1]))
        params = [param for write in writes for param in write.params]
        return _execute(Write(f"WITH {clauses} {writes[-1].sql}", tuple(params), writes[-1].returning))
    for write in writes[:-1]:
        _execute(write)
    return _execute(writes[-1])


def _execute(write: Write) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(write.sql, write.params)
        return cursor.fetchall() if write.returning else []


# Values every backend takes as they are: a field's preparation would return them unchanged
# (a string only for a text column: a UUID given as a string is stored another way on
# SQLite, and a JSON string is encoded).
_PLAIN = (int, bool, type(None))


def prepared(field: Field, value):
    """``value`` ready for ``field``'s column, as ``Model.save`` would send it; plain
    values as they are (preparing each of a purchase's fifty values through its field
    cost more than the statement's binding)."""
    if type(value) in _PLAIN or (type(value) is str and isinstance(field, (CharField, TextField))):
        return value
    return field.get_db_prep_save(value, connection)


def prepared_row(instance: Model) -> tuple[list[str], list]:
    """An unsaved instance's concrete columns (quoted) and their values, prepared for the
    database by their fields as ``Model.save`` would (``pre_save``: auto_now and the
    like)."""
    meta = type(instance)._meta
    columns, values = [], []
    for field in meta.concrete_fields:
        value = field.pre_save(instance, add=True)
        if (field is meta.auto_field and value is None) or isinstance(value, DatabaseDefault):
            continue  # the database makes it (a serial id, a db_default)
        columns.append(connection.ops.quote_name(field.column))
        # Plain values go as they are (the driver adapts them); the rest through the field.
        values.append(prepared(field, value))
    return columns, values


def insert(*instances: Model, returning: Sequence[str] = ()) -> Write:
    """INSERT of unsaved instances of one model, every concrete column as the instance
    holds it (ids are made in Python, so nothing needs reading back), optionally
    RETURNING the named columns."""
    model = type(instances[0])
    rows = [prepared_row(instance) for instance in instances]
    columns = rows[0][0]
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
    sql = f"INSERT INTO {table(model)} ({', '.join(columns)}) VALUES {placeholders}"  # noqa: S608
    if returning:
        sql += " RETURNING " + ", ".join(connection.ops.quote_name(name) for name in returning)
    return Write(sql, tuple(value for _, values in rows for value in values), bool(returning))


def saved(instance: Model) -> Model:
    """Mark an instance written by a ``Write`` as saved, as ``Model.save`` would."""
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)
