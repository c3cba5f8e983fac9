"""A purchase's service row inserted from the catalog in the same statement, so that
what is sold is the plan as the database holds it at that instant: a retired plan or a
changed price is never sold from a copy read earlier (on this host or another).

    WITH plan AS (SELECT <terms> FROM <plan table> WHERE id = %s AND is_active),
         added AS (INSERT INTO <service table> (...) SELECT ... FROM plan
                   [ON CONFLICT DO NOTHING] RETURNING 1)
    SELECT <terms>, (SELECT count(*) FROM added) FROM plan

No row: no such plan on sale. A row whose count is 0: the insert met a unique
constraint (a domain taken). Elsewhere than PostgreSQL (``statements.folding``), the
plan is read and the row inserted in two statements, with the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import IntegrityError, connection, transaction
from django.db.models import Model

from iaas.contracts import statements
from iaas.contracts.errors import PlanNotOnSale


class Taken(Exception):
    """The new service row met a unique constraint (a domain already taken)."""


def insert_from_plan(
    service: Model, *, plan_model: type[Model], plan_id: str, terms: Sequence[str], unique: bool = False
) -> dict:
    """Insert the unsaved ``service`` (its plan set by id) if ``plan_id`` is on sale, and
    return the plan's ``terms`` (column names: the price, its currency, the cap) as the
    row it was sold from held them. Raises PlanNotOnSale for a plan not on sale and, with
    ``unique``, Taken when the row meets a unique constraint (then nothing is written
    and the transaction is still usable)."""
    if not statements.folding():
        return _insert_portably(service, plan_model=plan_model, plan_id=plan_id, terms=terms, unique=unique)
    columns, values = statements.prepared_row(service)
    names = ", ".join(connection.ops.quote_name(name) for name in terms)
    conflict = " ON CONFLICT DO NOTHING" if unique else ""
    sql = (
        f"WITH plan AS (SELECT {names} FROM {statements.table(plan_model)} "  # noqa: S608
        f"WHERE id = %s AND is_active), "
        f"added AS (INSERT INTO {statements.table(type(service))} ({', '.join(columns)}) "
        f"SELECT {', '.join(['%s'] * len(values))} FROM plan{conflict} RETURNING 1) "
        f"SELECT {names}, (SELECT count(*) FROM added) FROM plan"
    )
    rows = statements.run_together(statements.Write(sql, (plan_id, *values), returning=True))
    if not rows:
        raise PlanNotOnSale(plan_id)
    *held, added = rows[0]
    if not added:
        raise Taken()
    statements.saved(service)
    return dict(zip(terms, held, strict=True))


def _insert_portably(
    service: Model, *, plan_model: type[Model], plan_id: str, terms: Sequence[str], unique: bool
) -> dict:
    held = plan_model.objects.filter(pk=plan_id, is_active=True).values(*terms).first()
    if held is None:
        raise PlanNotOnSale(plan_id)
    if not unique:
        service.save(force_insert=True)
        return held
    try:
        with transaction.atomic():  # a savepoint: the purchase's transaction stays usable
            service.save(force_insert=True)
    except IntegrityError:
        raise Taken() from None
    return held
