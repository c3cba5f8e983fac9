"""Renew hosting subscriptions whose period has ended: a month each, charged; suspend
those whose wallet cannot pay, resume them when it can, cancel those unpaid past the
grace period (IAAS_HOSTING_GRACE_DAYS); never renew a cancelled one, never lift an
operator's hold. Batch by batch (iaas.hosting.batch): one ChargesRecorded per wallet,
so Billing books one ledger entry per wallet for the batch's months.

Safe to run again (a month is charged once: the period end moves with the charge) and
in many processes at once: ``--workers N`` runs N processes, each on its partition of
wallets (``--partition i/N`` runs one, as a worker on another host would)."""

from __future__ import annotations

import datetime as dt
import logging

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from iaas.common.cli import (
    CurrencyTotals,
    add_dry_run_and_json_arguments,
    add_worker_arguments,
    dump_json,
    merge_run_summaries,
    report_run,
    run_summary,
    run_worker_processes,
)
from iaas.common.memory import relaxed_gc
from iaas.hosting import batch, locks, services
from iaas.hosting.spending import spender
from iaas.spending.batch import Partition

logger = logging.getLogger(__name__)

# Output name -> the batch report's action.
ACTIONS = {
    "renewed": "charged",
    "up_to_date": "up_to_date",
    "suspended": "suspended",
    "resumed": "resumed",
    "still_suspended": "still_suspended",
    "cancelled": "cancelled",
    "busy": "busy",
}


class Command(BaseCommand):
    help = "Renew ended hosting periods for a month (charged) in batches; suspend, resume, cancel unpaid."

    def add_arguments(self, parser):
        add_worker_arguments(parser)
        add_dry_run_and_json_arguments(parser, dry_run_help="show what is due; change nothing")

    def handle(self, *args, workers, partition, batch_size, at, dry_run, as_json, **options):
        now = dt.datetime.fromisoformat(at) if at else timezone.now()
        if workers < 1 or (batch_size is not None and batch_size < 1):
            raise CommandError("--workers and --batch-size are at least 1")
        if dry_run:
            self._dry_run(now, as_json=as_json)
            return
        if workers > 1 and partition is None:
            args = ["--at", now.isoformat(), *(["--batch-size", str(batch_size)] if batch_size else [])]
            summary = merge_run_summaries(run_worker_processes("renew_subscriptions", workers, args), now=now)
        else:
            part = Partition.parse(partition) if partition else Partition()
            with relaxed_gc():
                report = batch.renew_partition(
                    now=now, grace=services.hosting_grace(), partition=part, size=batch_size
                )
                released = spender.release_after_batch(wallet_ids=report.charged_wallets)
            summary = run_summary(
                report,
                now=now,
                items="subscriptions",
                units="months_charged",
                actions=ACTIONS,
                released=released,
            )
        report_run(self, summary, as_json=as_json, show=self._print)

    def _print(self, summary: dict) -> None:
        totals = CurrencyTotals()
        for currency, amount in summary["amounts"].items():
            totals.add(amount, currency)
        moment = dt.datetime.fromisoformat(summary["now"])
        self.stdout.write(
            f"checked {summary['subscriptions']} subscription(s) at {moment:%Y-%m-%d %H:%M %Z}: "
            f"renewed {summary['renewed']} for {summary['months_charged']} month(s) in all, {totals}"
        )
        self.stdout.write(
            f"  suspended {summary['suspended']}, resumed {summary['resumed']}, "
            f"still suspended {summary['still_suspended']}, cancelled unpaid {summary['cancelled']}, "
            f"busy elsewhere {summary['busy']}, failed {len(summary['failed'])}"
        )
        for failure in summary["failed"]:
            self.stderr.write(f"  FAILED subscription {failure.get('subscription_id')}: {failure['error']}")

    def _dry_run(self, now, *, as_json):
        due = []
        totals = CurrencyTotals()
        rows = locks.subscriptions_to_renew(now=now, partition=Partition()).filter(status="active")
        for subscription_id in rows.values_list("id", flat=True).iterator():
            months, amount, currency = services.subscription_renewals_due(
                subscription_id=subscription_id, now=now
            )
            if months:
                due.append({"subscription_id": str(subscription_id), "months": months, "amount": amount})
                totals.add(amount, currency)
        if as_json:
            self.stdout.write(dump_json({"dry_run": True, "now": now.isoformat(), "due": due}))
            return
        self.stdout.write(
            f"{len(due)} active subscription(s) due for {sum(d['months'] for d in due)} month(s), "
            f"{totals} (dry run; suspended ones are not tried)"
        )
