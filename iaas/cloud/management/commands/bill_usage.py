"""Hourly metering of cloud servers: accrue the started hours since each server's
``paid_until`` into its usage record of the month (capped per calendar month), suspend
servers whose wallet cannot pay, resume them when it can, terminate those suspended
past the grace period. No row is inserted per server-hour: the usage records, the
allowances and the servers are updated in place, batch by batch (iaas.cloud.batch).

Safe to run again (an hour is accrued once: ``paid_until`` moves with it) and in many
processes at once: ``--workers N`` runs N processes, each on its partition of wallets
(``--partition i/N`` runs one of them, as a worker on another host would); rows
another transaction holds are skipped and taken by the run's last pass, or the next run.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from iaas.cloud import batch, locks, services
from iaas.cloud.spending import spender
from iaas.common.cli import (
    EXIT_PROBLEMS,
    CurrencyTotals,
    add_dry_run_and_json_arguments,
    add_worker_arguments,
    dump_json,
    duration_option,
    format_duration,
    merge_run_summaries,
    run_summary,
    run_worker_processes,
)
from iaas.common.memory import relaxed_gc
from iaas.spending.batch import Partition

logger = logging.getLogger(__name__)

ACTIONS = ("charged", "up_to_date", "suspended", "resumed", "still_suspended", "terminated", "busy")


class Command(BaseCommand):
    help = "Accrue running servers' hours (capped monthly) in batches; suspend, resume, terminate."

    def add_arguments(self, parser):
        parser.add_argument(
            "--grace",
            help="terminate servers suspended longer than this (e.g. 72h, 7d; "
            "default IAAS_SERVER_GRACE_HOURS)",
        )
        add_worker_arguments(parser)
        add_dry_run_and_json_arguments(parser, dry_run_help="show what is due; change nothing")

    def handle(self, *args, grace, workers, partition, batch_size, at, dry_run, as_json, **options):
        grace_option = grace
        grace = duration_option(grace) if grace else dt.timedelta(hours=settings.IAAS_SERVER_GRACE_HOURS)
        now = dt.datetime.fromisoformat(at) if at else timezone.now()
        if workers < 1 or (batch_size is not None and batch_size < 1):
            raise CommandError("--workers and --batch-size are at least 1")
        if dry_run:
            self._dry_run(now, as_json=as_json)
            return
        if workers > 1 and partition is None:
            summary = self._run_workers(workers, now=now, grace=grace_option, batch_size=batch_size)
        else:
            part = Partition.parse(partition) if partition else Partition()
            with relaxed_gc():
                report = batch.meter_partition(now=now, grace=grace, partition=part, size=batch_size)
                released = spender.release_after_batch(wallet_ids=report.charged_wallets)
            summary = _summary(report, now=now, released=released)
        if as_json:
            self.stdout.write(dump_json(summary))
        else:
            self._print(summary, grace=grace)
        if summary["failed"]:
            raise SystemExit(EXIT_PROBLEMS)

    def _run_workers(
        self, workers: int, *, now: dt.datetime, grace: str | None, batch_size: int | None
    ) -> dict:
        """N processes, one partition each, started at once; their summaries added up."""
        args = ["--at", now.isoformat()]
        if grace:
            args += ["--grace", grace]
        if batch_size:
            args += ["--batch-size", str(batch_size)]
        return merge_run_summaries(run_worker_processes("bill_usage", workers, args), now=now)

    def _print(self, summary: dict, *, grace: dt.timedelta) -> None:
        totals = CurrencyTotals()
        for currency, amount in summary["amounts"].items():
            totals.add(amount, currency)
        moment = dt.datetime.fromisoformat(summary["now"])
        charged = summary["charged"] + summary["resumed"]
        self.stdout.write(
            f"metered {summary['servers']} server(s) at {moment:%Y-%m-%d %H:%M %Z}: "
            f"{charged} charged for {summary['hours_charged']} hour(s), {totals}"
        )
        self.stdout.write(
            f"  suspended {summary['suspended']}, resumed {summary['resumed']}, "
            f"still suspended {summary['still_suspended']}, terminated {summary['terminated']} "
            f"(grace {format_duration(grace)}), busy elsewhere {summary['busy']}, "
            f"failed {len(summary['failed'])}"
        )
        for failure in summary["failed"]:
            self.stderr.write(f"  FAILED server {failure.get('server_id')}: {failure['error']}")

    def _dry_run(self, now: dt.datetime, *, as_json: bool) -> None:
        due = []
        totals = CurrencyTotals()
        servers = locks.servers_to_meter(now=now, partition=Partition()).filter(status="active")
        for server in servers.select_related("plan").iterator():
            accruals = services.usage_due(server, now=now)
            if accruals:
                amount = sum(a.amount for a in accruals)
                due.append(
                    {"server_id": str(server.id), "hours": sum(a.hours for a in accruals), "amount": amount}
                )
                totals.add(amount, server.plan.currency)
        if as_json:
            self.stdout.write(dump_json({"dry_run": True, "now": now.isoformat(), "due": due}))
            return
        self.stdout.write(
            f"{len(due)} active server(s) have {sum(d['hours'] for d in due)} started hour(s) due, "
            f"{totals} (dry run; suspended servers are not tried)"
        )


def _summary(report, *, now: dt.datetime, released: int) -> dict:
    return run_summary(
        report,
        now=now,
        items="servers",
        units="hours_charged",
        actions={action: action for action in ACTIONS},
        released=released,
    )
