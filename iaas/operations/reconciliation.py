"""Reconciliation: every invariant of ARCHITECTURE.md checked over the whole database.

Billing checks its own tables with set-based SQL (through its contract); I4 joins, in
the database, the relations Billing, each selling context and the outbox lend through
their contracts; each selling context checks its usage records and charges (I11)
through its contract. All of it reads one REPEATABLE READ read-only snapshot, so a
purchase committing in between is never a false alarm. Undelivered charges and releases
older than a few minutes are reported too (I5): Billing has not booked them.

Besides the invariants, Billing lists what an operator should know of money coming in
(its contract's ``money_in_report``, read in the same snapshot): pending top-ups older than
IAAS_TOP_UP_PENDING_REPORT_AFTER_SECONDS and wallets in debt are listed only (a customer
who walked away from a payment is normal); an unresolved parked payment fails the check
like a stuck event does, because only an operator can place that money.
"""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql as psycopg_sql

from iaas.contracts import billing, bus, selling
from iaas.contracts.checks import INVARIANTS, Violation, invariant_order
from iaas.contracts.events import AllowanceReleased, ChargeRecorded, ChargesRecorded


@dataclass
class ReconciliationReport:
    violations: dict[str, list[Violation]] = field(default_factory=dict)
    pending_events: int = 0
    # Undelivered events that are not charges or releases (those are I5 violations),
    # failed or waiting longer than IAAS_RECONCILE_STUCK_AFTER_SECONDS.
    stuck_events: list[dict] = field(default_factory=list)
    # Money coming in (Billing's report): pending top-ups, parked payments, debts.
    money_in: billing.MoneyInReport | None = None
    deep: bool = False
    checked_at: dt.datetime | None = None

    @property
    def parked_payments(self) -> int:
        """Unresolved parked payments: money that arrived for no top-up, for an operator."""
        return self.money_in.parked_payments if self.money_in else 0

    @property
    def ok(self) -> bool:
        return not any(self.violations.values()) and not self.stuck_events and not self.parked_payments

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "deep": self.deep,
            "pending_events": self.pending_events,
            "stuck_events": self.stuck_events,
            "money_in": self.money_in.as_dict() if self.money_in else None,
            "invariants": {
                name: {
                    "description": INVARIANTS[name],
                    "ok": not self.violations.get(name),
                    "violations": [v.as_dict() for v in self.violations.get(name, [])],
                }
                for name in sorted(self.violations, key=invariant_order)
            },
        }


# I4 joined in the database: Billing's side (grants, captures, releases, the hold) per
# wallet and context, each selling context's side (allowance, granted, charged,
# released, accrued) and what the outbox still has to deliver; each side is a relation
# its contract lends. Only the pairs that disagree come back. "Charged" includes usage
# accrued in place and not yet closed into charges (Billing has not been told of it and
# still holds it): charged = captured + pending charges + accrued, and the hold is the
# allowance + accrued + pending charges + pending releases.
I4_QUERY = """
WITH billing AS ({billing}),
selling AS ({selling}),
pending AS (
    SELECT wallet_id, context,
           CAST(SUM(CASE WHEN event_type IN ('ChargeRecorded', 'ChargesRecorded')
                         THEN amount ELSE 0 END) AS BIGINT) AS charges,
           CAST(SUM(CASE WHEN event_type = 'AllowanceReleased' THEN amount ELSE 0 END) AS BIGINT) AS releases
    FROM ({pending}) p GROUP BY wallet_id, context
),
pairs AS (
    SELECT COALESCE(b.wallet_id, s.wallet_id) AS wallet_id, COALESCE(b.context, s.context) AS context,
           COALESCE(b.granted, 0) AS granted, COALESCE(b.captured, 0) AS captured,
           COALESCE(b.released, 0) AS released_applied, COALESCE(b.outstanding, 0) AS outstanding,
           COALESCE(s.allowance, 0) AS allowance, COALESCE(s.granted, 0) AS received,
           COALESCE(s.charged, 0) AS charged, COALESCE(s.released, 0) AS released,
           COALESCE(s.accrued, 0) AS accrued
    FROM billing b FULL OUTER JOIN selling s ON s.wallet_id = b.wallet_id AND s.context = b.context
)
SELECT x.wallet_id, x.context, x.granted, x.captured, x.released_applied, x.outstanding,
       x.allowance, x.received, x.charged, x.released, x.accrued,
       COALESCE(p.charges, 0), COALESCE(p.releases, 0)
FROM pairs x
LEFT JOIN pending p ON p.wallet_id = x.wallet_id AND p.context = x.context
WHERE x.granted <> x.received
   OR x.charged <> x.captured + COALESCE(p.charges, 0) + x.accrued
   OR x.released <> x.released_applied + COALESCE(p.releases, 0)
   OR x.outstanding <> x.allowance + x.accrued + COALESCE(p.charges, 0) + COALESCE(p.releases, 0)
"""


def check_i4() -> list[Violation]:
    billing_side = billing.hold_totals_relation()
    selling_sides = [context.allowance_totals_relation() for context in selling.contexts()]
    pending = bus.undelivered_amounts_relation([ChargeRecorded, ChargesRecorded, AllowanceReleased])
    sql = I4_QUERY.format(
        billing=billing_side.sql,
        selling=" UNION ALL ".join(relation.sql for relation in selling_sides),
        pending=pending.sql,
    )
    params = [*billing_side.params, *(p for r in selling_sides for p in r.params), *pending.params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    violations = []
    for (
        wallet_id,
        context,
        granted,
        captured,
        released_applied,
        outstanding,
        allowance,
        received,
        charged,
        released,
        accrued,
        pending_charges,
        pending_releases,
    ) in rows:
        wallet = wallet_id if isinstance(wallet_id, uuid.UUID) else uuid.UUID(str(wallet_id))
        # SUM is numeric
        accrued, pending_charges, pending_releases = int(accrued), int(pending_charges), int(pending_releases)

        def report(expected, found, detail, wallet=wallet, context=context):
            violations.append(Violation("I4", wallet, expected, found, f"{context}: {detail}"))

        if granted != received:
            report(granted, received, "Billing granted differs from what the context received")
        if charged != captured + pending_charges + accrued:
            report(
                charged,
                captured + pending_charges + accrued,
                f"spent differs from settled + pending charges + usage accrued ({accrued}, not yet closed)",
            )
        if released != released_applied + pending_releases:
            report(released, released_applied + pending_releases, "releases differ from applied + pending")
        if outstanding != allowance + accrued + pending_charges + pending_releases:
            report(
                allowance + accrued + pending_charges + pending_releases,
                outstanding,
                "hold differs from allowance + usage accrued + pending charges + pending releases",
            )
    return sorted(violations, key=lambda v: (str(v.wallet_id), v.detail))


def check_i11() -> list[Violation]:
    """Each selling context's usage records against its services, and its charges against
    each other (I11), checked by the context in its own tables."""
    return [violation for context in selling.contexts() for violation in context.check_usage()]


def check_events() -> tuple[list[Violation], list[dict]]:
    """Events a handler should have applied by now. An unsettled charge or unapplied
    release is an I5 violation (Billing has not booked it); any other is reported as
    stuck. Recent pending events are normal: delivery lags a little behind commit."""
    stuck = bus.stuck_messages(older_than=dt.timedelta(seconds=settings.IAAS_RECONCILE_STUCK_AFTER_SECONDS))
    violations, others = [], []
    for message in stuck:
        since = f"{message.status} since {message.created_at:%Y-%m-%d %H:%M}, {message.attempts} attempt(s)"
        charge_events = (ChargeRecorded.type_name(), ChargesRecorded.type_name())
        if message.event_type in (*charge_events, AllowanceReleased.type_name()):
            what = "charge not settled" if message.event_type in charge_events else "release not applied"
            error = f": {message.last_error.splitlines()[-1][:200]}" if message.last_error else ""
            violations.append(
                Violation(
                    "I5",
                    uuid.UUID(message.wallet_id) if message.wallet_id else None,
                    "applied",
                    since,
                    f"{what} ({message.event_type} {message.event_id}){error}",
                )
            )
        else:
            others.append(
                {
                    "event": message.event_type,
                    "event_id": message.event_id,
                    "handler": message.handler,
                    "wallet_id": message.wallet_id,
                    "status": message.status,
                    "since": message.created_at.isoformat(),
                    "attempts": message.attempts,
                }
            )
    return violations, others


def _cross_context_checks() -> tuple[list[Violation], list[Violation], list[Violation], list[dict]]:
    event_violations, stuck = check_events()
    return check_i4(), check_i11(), event_violations, stuck


def _snapshot_settings(cursor, snapshot: str | None = None) -> None:
    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    if snapshot:
        # A utility statement takes no bound parameter (server-side binding would send
        # one): the id, from pg_export_snapshot(), goes in as a quoted literal.
        cursor.execute(f"SET TRANSACTION SNAPSHOT {psycopg_sql.quote(snapshot)}")
    # Aggregates over the whole ledger: sort and hash in memory, not on disk.
    cursor.execute("SET LOCAL work_mem = '256MB'")


def _in_snapshot(snapshot: str, work):
    """Run ``work`` on this thread's own connection, in the exported snapshot: the same
    consistent view as the caller's transaction (what pg_dump --jobs does)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            _snapshot_settings(cursor, snapshot)
            return work()
    finally:
        connection.close()


def reconcile(*, deep: bool = False) -> ReconciliationReport:
    """Check I1 to I9, I11 and I12 over the whole database in one REPEATABLE READ read-only
    snapshot, and read Billing's report of money coming in from the same snapshot.
    ``deep`` also re-derives Billing's running totals from its reservation record.

    On PostgreSQL, as the outermost transaction, Billing's checks and the cross-context
    ones (I4, the outbox) run at once on two connections that share one exported
    snapshot (IAAS_RECONCILE_PARALLEL): the same view, about half the wall time.
    """
    # Inside a caller's transaction (a test case) the snapshot is the caller's: SET
    # TRANSACTION is only allowed before a transaction's first query.
    outermost = not connection.in_atomic_block
    parallel = outermost and connection.vendor == "postgresql" and settings.IAAS_RECONCILE_PARALLEL
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                _snapshot_settings(cursor)
                if parallel:
                    cursor.execute("SELECT pg_export_snapshot()")
                    (snapshot,) = cursor.fetchone()
        if parallel:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile") as pool:
                cross_context = pool.submit(_in_snapshot, snapshot, _cross_context_checks)
                violations = billing.check_invariants(deep=deep)
                money_in = billing.money_in_report()
                i4, i11, event_violations, stuck = cross_context.result()
        else:
            violations = billing.check_invariants(deep=deep)
            money_in = billing.money_in_report()
            i4, i11, event_violations, stuck = _cross_context_checks()
        violations["I4"] = i4
        violations["I5"] = violations.get("I5", []) + event_violations
        violations["I11"] = i11
        return ReconciliationReport(
            violations=dict(sorted(violations.items(), key=lambda item: invariant_order(item[0]))),
            pending_events=bus.pending_count(),
            stuck_events=stuck,
            money_in=money_in,
            deep=deep,
            checked_at=timezone.now(),
        )
