"""Give back allowance the selling contexts have held unused for a while. Each context
decides (it is the source of truth for its allowance) and rechecks under the
allowance's lock; Billing learns of each release by AllowanceReleased. Safe to run
again and in two processes at once (a locked allowance is in use, hence skipped)."""

from __future__ import annotations

import logging

from django.core.management.base import BaseCommand, CommandError

from iaas.common.cli import (
    EXIT_PROBLEMS,
    EXIT_REFUSED,
    CurrencyTotals,
    dump_json,
    format_duration,
    parse_duration,
    progress,
)
from iaas.contracts import selling

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Release allowance unused for --older-than (e.g. 24h, 7d) in every selling context."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="idle for at least this long (30m, 24h, 7d)")
        parser.add_argument("--dry-run", action="store_true", help="list what would be released")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")

    def handle(self, *args, older_than, dry_run, as_json, **options):
        try:
            idle_for = parse_duration(older_than)
        except ValueError as error:
            raise CommandError(str(error), returncode=EXIT_REFUSED) from None
        if idle_for.total_seconds() <= 0:
            raise CommandError("--older-than must be positive", returncode=EXIT_REFUSED)
        summary = {"older_than": format_duration(idle_for), "dry_run": dry_run, "contexts": {}, "failed": []}
        for context in selling.contexts():
            idle = context.idle_allowances(idle_for=idle_for)
            totals = CurrencyTotals()
            released = 0
            if dry_run:
                for allowance in idle:
                    totals.add(allowance.amount, allowance.currency)
            else:
                for allowance in progress(idle, total=len(idle), description=f"releasing {context.name}"):
                    try:
                        done = context.release_idle_allowance(
                            wallet_id=allowance.wallet_id, idle_for=idle_for
                        )
                    except Exception as error:  # one wallet's failure stops no other's release
                        logger.exception(
                            "releasing %s allowance of %s failed", context.name, allowance.wallet_id
                        )
                        summary["failed"].append(
                            {
                                "context": context.name,
                                "wallet_id": str(allowance.wallet_id),
                                "error": repr(error),
                            }
                        )
                        continue
                    if done is not None:
                        released += 1
                        totals.add(done.amount, done.currency)
            summary["contexts"][context.name] = {
                "idle": len(idle),
                "released": len(idle) if dry_run else released,
                "amounts": totals.as_dict(),
                "text": str(totals),
            }
        if as_json:
            for facts in summary["contexts"].values():
                facts.pop("text")
            self.stdout.write(dump_json(summary))
        else:
            verb = "would release" if dry_run else "released"
            self.stdout.write(f"allowances unused for {summary['older_than']}:")
            for name, facts in summary["contexts"].items():
                skipped = (
                    "" if dry_run else f" ({facts['idle'] - facts['released']} in use or gone meanwhile)"
                )
                counts = f"{verb} {facts['released']} of {facts['idle']} idle"
                self.stdout.write(f"  {name:<8} {counts}, {facts['text']}{skipped}")
            for failure in summary["failed"]:
                self.stderr.write(f"  FAILED {failure['context']} {failure['wallet_id']}: {failure['error']}")
        if summary["failed"]:
            raise SystemExit(EXIT_PROBLEMS)
