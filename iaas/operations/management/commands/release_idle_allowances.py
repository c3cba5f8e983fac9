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
    add_dry_run_and_json_arguments,
    dump_json,
    duration_option,
    format_duration,
    run_each,
    write_failures,
)
from iaas.contracts import selling

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Release allowance unused for --older-than (e.g. 24h, 7d) in every selling context."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="idle for at least this long (30m, 24h, 7d)")
        add_dry_run_and_json_arguments(parser, dry_run_help="list what would be released")

    def handle(self, *args, older_than, dry_run, as_json, **options):
        idle_for = duration_option(older_than)
        if idle_for.total_seconds() <= 0:
            raise CommandError("--older-than must be positive", returncode=EXIT_REFUSED)
        summary = {"older_than": format_duration(idle_for), "dry_run": dry_run, "contexts": {}}
        failures = []
        for context in selling.contexts():
            idle = context.idle_allowances(idle_for=idle_for)
            totals = CurrencyTotals()
            released = 0
            if dry_run:
                for allowance in idle:
                    totals.add(allowance.amount, allowance.currency)
            else:
                releases, context_failures = run_each(
                    idle,
                    lambda allowance, context=context: context.release_idle_allowance(
                        wallet_id=allowance.wallet_id, idle_for=idle_for
                    ),
                    description=f"releasing {context.name}",
                    identify=lambda allowance, context=context: (
                        f"{context.name} {allowance.wallet_id}",
                        {"context": context.name, "wallet_id": str(allowance.wallet_id)},
                    ),
                    logger=logger,
                )
                failures += context_failures
                for done in releases:
                    if done is not None:  # None: in use or gone meanwhile
                        released += 1
                        totals.add(done.amount, done.currency)
            summary["contexts"][context.name] = {
                "idle": len(idle),
                "released": len(idle) if dry_run else released,
                "amounts": totals.as_dict(),
                "text": str(totals),
            }
        summary["failed"] = [failure.as_dict() for failure in failures]
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
            write_failures(self.stderr, failures)
        if failures:
            raise SystemExit(EXIT_PROBLEMS)
