"""The settlement run: every selling context closes the metered usage that is due
(the cadence IAAS_SETTLE_USAGE_EVERY_HOURS after it accrued, a month's end, a service's
end) into immutable charges, one ChargesRecorded per wallet, and Billing books them with
one ledger entry per wallet and context (right after each batch commits, set-based, or
by ``deliver_events`` workers). Run it from cron hourly: what is not due waits.

Safe to run again (a closed record is not due) and in many processes at once:
``--workers N`` runs N processes, each on its partition of wallets.
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from iaas.common.cli import (
    EXIT_REFUSED,
    CurrencyTotals,
    add_dry_run_and_json_arguments,
    add_worker_arguments,
    dump_json,
    run_worker_processes,
)
from iaas.common.memory import relaxed_gc
from iaas.contracts import selling
from iaas.spending.batch import Partition

COUNTS = ("records", "charges", "wallets", "batches")


class Command(BaseCommand):
    help = "Close metered usage that is due into charges; Billing books one entry per wallet and context."

    def add_arguments(self, parser):
        add_worker_arguments(parser)
        add_dry_run_and_json_arguments(parser, dry_run_help="count the usage records due; change nothing")

    def handle(self, *args, workers, partition, batch_size, at, dry_run, as_json, **options):
        now = dt.datetime.fromisoformat(at) if at else timezone.now()
        if workers < 1 or (batch_size is not None and batch_size < 1):
            raise CommandError("--workers and --batch-size are at least 1", returncode=EXIT_REFUSED)
        if dry_run:
            due = {context.name: context.usage_due(now=now) for context in selling.contexts()}
            self.stdout.write(
                dump_json({"dry_run": True, "now": now.isoformat(), "due": due})
                if as_json
                else f"{sum(due.values())} usage record(s) due for closing (dry run)"
            )
            return
        if workers > 1 and partition is None:
            args = ["--at", now.isoformat(), *(["--batch-size", str(batch_size)] if batch_size else [])]
            summary = _merge(run_worker_processes("settle_usage", workers, args), now=now)
        else:
            part = Partition.parse(partition) if partition else Partition()
            with relaxed_gc():
                closed_by_context = [
                    context.close_usage(now=now, partition=(part.index, part.count), size=batch_size)
                    for context in selling.contexts()
                ]
            summary = {
                "now": now.isoformat(),
                "contexts": {
                    closed.context: {
                        **{key: getattr(closed, key) for key in COUNTS},
                        "amounts": closed.amounts,
                    }
                    for closed in closed_by_context
                },
            }
        if as_json:
            self.stdout.write(dump_json(summary))
            return
        for name, closed in summary["contexts"].items():
            totals = CurrencyTotals()
            for currency, amount in closed["amounts"].items():
                totals.add(amount, currency)
            self.stdout.write(
                f"{name}: closed {closed['records']} usage record(s) into {closed['charges']} charge(s) "
                f"on {closed['wallets']} wallet(s), {totals}, in {closed['batches']} batch(es)"
            )


def _merge(summaries: list[dict], *, now: dt.datetime) -> dict:
    contexts: dict[str, dict] = {}
    for summary in summaries:
        for name, closed in summary["contexts"].items():
            into = contexts.setdefault(name, {**dict.fromkeys(COUNTS, 0), "amounts": {}})
            for key in COUNTS:
                into[key] += closed[key]
            for currency, amount in closed["amounts"].items():
                into["amounts"][currency] = into["amounts"].get(currency, 0) + amount
    return {"now": now.isoformat(), "workers": len(summaries), "contexts": contexts}
