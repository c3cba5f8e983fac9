"""Check every invariant of ARCHITECTURE.md (I1 to I9, I11, I12) over the whole database, in
one read-only snapshot, with set-based SQL. Exit 0 when all hold, 1 when any fails, when an
event is stuck or when a parked payment waits for an operator. Old pending top-ups and
wallets in debt are listed, not failed.

--fix does only what is safe: deliver the events still in the outbox (failed ones
included: handlers are idempotent), then check again. It never rewrites a balance."""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand

from iaas.common.cli import EXIT_PROBLEMS, dump_json, format_duration, spinner
from iaas.contracts import bus
from iaas.contracts.checks import INVARIANTS, invariant_order
from iaas.contracts.types import format_minor_units
from iaas.operations.reconciliation import ReconciliationReport, reconcile


class Command(BaseCommand):
    help = (
        "Check invariants I1-I9, I11 and I12 over the whole database; exit 1 when any is violated "
        "(or an event is stuck, or a parked payment waits)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--fix",
            action="store_true",
            help="deliver pending and failed events (the only safe repair), then check again",
        )
        parser.add_argument("--dry-run", action="store_true", help="with --fix: say what it would deliver")
        parser.add_argument(
            "--deep",
            action="store_true",
            help="also re-derive Billing's running totals and capture links from the reservation record",
        )
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON report")

    def handle(self, *args, fix, dry_run, deep, as_json, **options):
        with spinner("checking invariants"):
            report = reconcile(deep=deep)
        repair = None
        if fix and (report.pending_events or not report.ok):
            undelivered = bus.undelivered_count()
            if dry_run:
                repair = {"dry_run": True, "would_deliver": undelivered}
            else:
                requeued = bus.retry_failed()
                delivered = bus.deliver_pending()
                repair = {
                    "requeued": requeued,
                    "delivered": delivered.delivered,
                    "failed": delivered.failed,
                    "before": report.as_dict(),
                }
                with spinner("checking again"):
                    report = reconcile(deep=deep)
        if as_json:
            self.stdout.write(dump_json({**report.as_dict(), "fix": repair}))
        else:
            self._print(report, repair)
        if not report.ok:
            raise SystemExit(EXIT_PROBLEMS)

    def _print(self, report: ReconciliationReport, repair: dict | None) -> None:
        write = self.stdout.write
        if repair is not None:
            if repair.get("dry_run"):
                write(f"--fix --dry-run: would deliver {repair['would_deliver']} event(s); nothing changed")
            else:
                before = sum(len(i["violations"]) for i in repair["before"]["invariants"].values())
                write(
                    f"--fix: delivered {repair['delivered']} event(s), {repair['failed']} failed again "
                    f"(failed and backing-off rows put back in line first); "
                    f"{before} violation(s) before, checking again"
                )
        mode = "deep" if report.deep else "standard"
        write(f"reconcile ({mode}) at {report.checked_at:%Y-%m-%d %H:%M:%S %Z}, one read-only snapshot")
        for name in sorted(INVARIANTS, key=invariant_order):
            violations = report.violations.get(name, [])
            status = "ok" if not violations else "FAILED"
            count = f"  ({len(violations)} violation(s))" if violations else ""
            write(f"  {name}  {status:<6}  {INVARIANTS[name]}{count}")
            for v in violations:
                wallet = f"wallet {v.wallet_id}" if v.wallet_id else "database"
                write(f"        {wallet}  expected {v.expected}  found {v.found}  {v.detail}")
        write(f"  events: {report.pending_events} pending delivery, {len(report.stuck_events)} other stuck")
        for event in report.stuck_events:
            write(
                f"        {event['event']} {event['event_id']} to {event['handler']}: "
                f"{event['status']} since {event['since']} ({event['attempts']} attempt(s))"
            )
        self._print_money_in(report)
        failed = [name for name, found in report.violations.items() if found]
        if report.ok:
            write(f"all {len(INVARIANTS)} invariants hold")
        else:
            total = sum(len(found) for found in report.violations.values())
            write(
                f"VIOLATED: {', '.join(failed) or 'none'} ({total} violation(s)); "
                f"{len(report.stuck_events)} stuck event(s); "
                f"{report.parked_payments} parked payment(s) to resolve"
            )

    def _print_money_in(self, report: ReconciliationReport) -> None:
        """Money coming in: parked payments (an operator must place them), pending top-ups
        past the report's age and wallets in debt (listed only)."""
        money_in = report.money_in
        if money_in is None:
            return
        write = self.stdout.write
        older = format_duration(dt.timedelta(seconds=money_in.pending_after_seconds))
        write(
            f"  money in: {money_in.parked_payments} parked payment(s) to resolve, "
            f"{money_in.pending_top_ups} top-up(s) pending longer than {older}, "
            f"{money_in.wallets_in_debt} wallet(s) in debt"
        )
        for parked in money_in.unresolved_parked_payments:
            write(
                f"        PARKED {parked.provider} {parked.payment_reference}  "
                f"{format_minor_units(parked.amount, parked.currency)}  "
                f"since {parked.parked_at:%Y-%m-%d %H:%M}: {parked.why}"
            )
        for top_up in money_in.oldest_pending_top_ups:
            reference = f" {top_up.provider_reference}" if top_up.provider_reference else ""
            write(
                f"        pending top-up {top_up.top_up_id}  wallet {top_up.wallet_id}  "
                f"{format_minor_units(top_up.amount, top_up.currency)}  {top_up.provider}{reference}  "
                f"since {top_up.created_at:%Y-%m-%d %H:%M}, {top_up.failed_attempts} refused attempt(s)"
            )
        for debt in money_in.largest_debts:
            write(
                f"        debt  wallet {debt.wallet_id}  {format_minor_units(debt.debt, debt.currency)}  "
                f"({debt.status})"
            )
        listed = {
            "parked payments": (money_in.parked_payments, len(money_in.unresolved_parked_payments)),
            "pending top-ups": (money_in.pending_top_ups, len(money_in.oldest_pending_top_ups)),
            "wallets in debt": (money_in.wallets_in_debt, len(money_in.largest_debts)),
        }
        for what, (count, shown) in listed.items():
            if count > shown:
                write(
                    f"        ... and {count - shown} more {what} (the --json report lists the same {shown})"
                )
