"""Record what an operator or a batch run changed, in the transaction that changes it.

The history is written by the code that makes the change (a service, an admin action),
never by triggers on the money tables: the hot paths pay nothing for it, and the record
knows who did it and why, which a trigger cannot. It is append-only in the database.

How to record
-------------

One change (a service that changes one row)::

    from iaas.audit.services import record_change

    def server_suspend(*, server_id, reason, actor_id=None):
        with transaction.atomic():
            server = server_lock(server_id)
            before = {"status": server.status, "suspension_reason": server.suspension_reason}
            ...  # change it
            record_change(
                obj_type="cloud.server",  # object_type(server) says the same
                obj_id=server.pk,
                action="suspend",
                before=before,
                after={"status": server.status, "suspension_reason": server.suspension_reason},
                actor_id=actor_id,  # the operator, or None for a run
                actor_label="",  # a run names itself: "bill_usage"
                reason=reason,  # "operator:alice", "insufficient_funds", ...
            )

Many changes at once (a batch run that suspends many rows with one UPDATE): collect
one ``Change`` per row and write them with one INSERT, in the batch's transaction::

    from iaas.audit.services import Change, record_changes

    record_changes(
        [
            Change(
                obj_type="cloud.server",
                obj_id=row.id,
                action="suspend",
                before={"status": "active"},
                after={"status": "suspended"},
                actor_label="bill_usage",
                reason="insufficient_funds",
            )
            for row in suspended
        ]
    )

Conventions, so that the object's admin page finds its history:

- ``obj_type`` is ``"<app_label>.<model_name>"`` (lower case, as ``object_type(obj)``
  returns it), ``obj_id`` the primary key (stored as text).
- ``before`` and ``after`` hold the changed fields only, JSON-able (UUIDs, dates and
  Decimals are encoded by Django's JSON encoder). ``changed_fields`` trims two
  snapshots to what differs.
- ``action`` is a short verb: ``create``, ``change``, ``freeze``, ``unfreeze``,
  ``close``, ``change_groups``, ``suspend``, ``resume``.
- Record only what changed: a call that changes nothing records nothing.

Both functions refuse to run outside a transaction (``RuntimeError``): a record
committed without its change, or a change committed without its record, is the one
thing a history must never show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import models, transaction

from .models import ChangeRecord


@dataclass(frozen=True)
class Change:
    """One row for ``record_changes``: the same fields as ``record_change`` takes."""

    obj_type: str
    obj_id: Any
    action: str
    before: Mapping[str, Any] = field(default_factory=dict)
    after: Mapping[str, Any] = field(default_factory=dict)
    actor_id: int | None = None
    actor_label: str = ""
    reason: str = ""

    def to_record(self) -> ChangeRecord:
        if not self.obj_type or "." not in self.obj_type:
            raise ValueError(f'obj_type is "app_label.model", not {self.obj_type!r}')
        if not self.action:
            raise ValueError("a change needs an action")
        return ChangeRecord(
            obj_type=self.obj_type.lower(),
            obj_id=str(self.obj_id),
            action=self.action,
            before=dict(self.before),
            after=dict(self.after),
            actor_id=self.actor_id,
            actor_label=self.actor_label,
            reason=self.reason,
        )


def object_type(obj: models.Model | type[models.Model]) -> str:
    """``"cloud.serverplan"`` for a ServerPlan (or its class): the ``obj_type`` its admin
    page looks its history up by."""
    return obj._meta.label_lower


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict, dict]:
    """The two snapshots trimmed to the keys whose values differ."""
    keys = [key for key in {**before, **after} if before.get(key) != after.get(key)]
    return {key: before.get(key) for key in keys}, {key: after.get(key) for key in keys}


def _require_transaction() -> None:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("Record a change inside the transaction that makes it (transaction.atomic()).")


def record_change(
    *,
    obj_type: str,
    obj_id,
    action: str,
    before: dict,
    after: dict,
    actor_id: int | None = None,
    actor_label: str = "",
    reason: str = "",
) -> ChangeRecord:
    """Append one change to the history, in the caller's transaction (one INSERT)."""
    _require_transaction()
    record = Change(
        obj_type=obj_type,
        obj_id=obj_id,
        action=action,
        before=before,
        after=after,
        actor_id=actor_id,
        actor_label=actor_label,
        reason=reason,
    ).to_record()
    record.save(force_insert=True)
    return record


def record_changes(rows: Iterable[Change]) -> list[ChangeRecord]:
    """Append many changes with one INSERT (a batch run's), in the caller's transaction.
    Nothing to record, no statement."""
    records = [row.to_record() for row in rows]
    if not records:
        return []
    _require_transaction()
    return ChangeRecord.objects.bulk_create(records)
