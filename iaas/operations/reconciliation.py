"""Reconciliation: every invariant of ARCHITECTURE.md checked over the whole database.

Billing checks its own tables with set-based SQL; I4 joins Billing's side with each
selling context's side, each read through its contract, all in one REPEATABLE READ
read-only transaction so a purchase committing in between is never a false alarm.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.db import connection, transaction

from iaas.contracts import billing, bus, selling
from iaas.contracts.checks import INVARIANTS, Violation
from iaas.contracts.events import AllowanceReleased, ChargeRecorded


@dataclass
class ReconciliationReport:
    violations: dict[str, list[Violation]] = field(default_factory=dict)
    pending_events: int = 0

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "pending_events": self.pending_events,
            "invariants": {
                name: {
                    "description": INVARIANTS[name],
                    "ok": not self.violations.get(name),
                    "violations": [v.as_dict() for v in self.violations.get(name, [])],
                }
                for name in sorted(self.violations)
            },
        }


def check_i4() -> list[Violation]:
    holds = {(str(h.wallet_id), h.context): h for h in billing.hold_totals()}
    allowances = {
        (str(a.wallet_id), a.context): a for context in selling.contexts() for a in context.allowance_totals()
    }
    pending = bus.undelivered_amounts([ChargeRecorded, AllowanceReleased])
    violations = []
    for wallet_id, context in sorted(set(holds) | set(allowances)):
        hold = holds.get((wallet_id, context))
        allowance = allowances.get((wallet_id, context))
        granted = hold.granted if hold else 0
        captured = hold.captured if hold else 0
        released_applied = hold.released if hold else 0
        outstanding = hold.outstanding if hold else 0
        a_amount = allowance.allowance if allowance else 0
        a_granted = allowance.granted if allowance else 0
        a_charged = allowance.charged if allowance else 0
        a_released = allowance.released if allowance else 0
        pending_charges = pending.get(("ChargeRecorded", wallet_id, context), 0)
        pending_releases = pending.get(("AllowanceReleased", wallet_id, context), 0)

        def report(expected, found, detail, wallet_id=wallet_id, context=context):
            violations.append(Violation("I4", uuid.UUID(wallet_id), expected, found, f"{context}: {detail}"))

        if granted != a_granted:
            report(granted, a_granted, "Billing granted differs from what the context received")
        if a_charged != captured + pending_charges:
            report(
                a_charged,
                captured + pending_charges,
                "charges recorded differ from settled + pending",
            )
        if a_released != released_applied + pending_releases:
            report(
                a_released,
                released_applied + pending_releases,
                "releases differ from applied + pending",
            )
        if outstanding != a_amount + pending_charges + pending_releases:
            report(
                a_amount + pending_charges + pending_releases,
                outstanding,
                "hold differs from allowance + pending charges + pending releases",
            )
    return violations


def reconcile() -> ReconciliationReport:
    # Inside a caller's transaction (a test case) the snapshot is the caller's: SET
    # TRANSACTION is only allowed before a transaction's first query.
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        violations = billing.check_invariants()
        violations["I4"] = check_i4()
        return ReconciliationReport(violations=violations, pending_events=bus.pending_count())
