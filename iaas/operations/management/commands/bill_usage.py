"""Hourly metering of every metered service (Cloud's servers, Storage's volumes, and any
context that registers metered services): accrue the started hours since each
service's ``paid_until`` into its usage record of the month (capped per calendar
month), suspend services whose wallet cannot pay, resume them when it can, end those
suspended past their context's grace period. No row is inserted per service-hour: the
usage records, the allowances and the services are updated in place, batch by batch
(iaas.spending.metering), one context after the other.

Safe to run again (an hour is accrued once: ``paid_until`` moves with it) and in many
processes at once: ``--workers N`` runs N processes, each on its partition of wallets
(``--partition i/N`` runs one of them, as a worker on another host would); rows
another transaction holds are skipped and taken by the run's last pass, or the next run.
"""

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
    duration_option,
    format_duration,
    merge_run_summaries,
    report_run,
    run_summary,
    run_worker_processes,
)
from iaas.common.memory import relaxed_gc
from iaas.contracts.selling import UnknownContext
from iaas.spending import metering
from iaas.spending.apps import metered_contexts
from iaas.spending.batch import Partition

logger = logging.getLogger(__name__)

ACTIONS = ("charged", "up_to_date", "suspended", "resumed", "still_suspended", "ended", "busy")


class Command(BaseCommand):
    help = "Accrue running services' hours (capped monthly) in batches; suspend, resume, end."

    def add_arguments(self, parser):
        parser.add_argument(
            "--contexts",
            help="comma-separated contexts to meter (default: every context that meters)",
        )
        parser.add_argument(
            "--grace",
            help="end services suspended longer than this (e.g. 72h, 7d; default: each context's own)",
        )
        add_worker_arguments(parser)
        add_dry_run_and_json_arguments(parser, dry_run_help="show what is due; change nothing")

    def handle(self, *args, contexts, grace, workers, partition, batch_size, at, dry_run, as_json, **options):
        now = dt.datetime.fromisoformat(at) if at else timezone.now()
        if workers < 1 or (batch_size is not None and batch_size < 1):
            raise CommandError("--workers and --batch-size are at least 1")
        try:
            meters = metered_contexts(contexts.split(",") if contexts else None)
        except (UnknownContext, ValueError) as error:
            raise CommandError(str(error)) from None
        grace_given = duration_option(grace) if grace else None
        if dry_run:
            self._dry_run(meters, now, as_json=as_json)
            return
        if workers > 1 and partition is None:
            summary = self._run_workers(
                workers, now=now, options=self._worker_options(contexts, grace, batch_size)
            )
        else:
            part = Partition.parse(partition) if partition else Partition()
            summary = _merged(
                [
                    self._meter(meter, now=now, grace=grace_given, partition=part, size=batch_size)
                    for meter in meters
                ],
                now=now,
            )
        report_run(self, summary, as_json=as_json, show=self._print)

    @staticmethod
    def _meter(meter, *, now: dt.datetime, grace: dt.timedelta | None, partition: Partition, size) -> dict:
        """One context's share of the run, and what its run reserved ahead and did not use,
        given back."""
        grace = grace or meter.grace()
        with relaxed_gc():
            report = metering.meter_partition(meter, now=now, grace=grace, partition=partition, size=size)
            released = meter.spender.release_after_batch(wallet_ids=report.charged_wallets)
        summary = run_summary(
            report,
            now=now,
            items="services",
            units="hours_charged",
            actions={action: action for action in ACTIONS},
            released=released,
        )
        return {
            **summary,
            "context": meter.spender.context,
            "noun": meter.noun,
            "grace": format_duration(grace),
        }

    @staticmethod
    def _worker_options(contexts: str | None, grace: str | None, batch_size: int | None) -> list[str]:
        args = []
        if contexts:
            args += ["--contexts", contexts]
        if grace:
            args += ["--grace", grace]
        if batch_size:
            args += ["--batch-size", str(batch_size)]
        return args

    def _run_workers(self, workers: int, *, now: dt.datetime, options: list[str]) -> dict:
        """N processes, one partition each, started at once; their summaries added up."""
        summaries = run_worker_processes("bill_usage", workers, ["--at", now.isoformat(), *options])
        merged = merge_run_summaries(summaries, now=now)
        parts: dict[str, list[dict]] = {}
        for summary in summaries:
            for name, part in summary["contexts"].items():
                parts.setdefault(name, []).append(part)
        merged["contexts"] = {
            name: merge_run_summaries(runs, now=now) | {"noun": runs[0]["noun"], "grace": runs[0]["grace"]}
            for name, runs in parts.items()
        }
        return merged

    def _print(self, summary: dict) -> None:
        moment = dt.datetime.fromisoformat(summary["now"])
        for name, part in summary["contexts"].items():
            totals = CurrencyTotals()
            for currency, amount in part["amounts"].items():
                totals.add(amount, currency)
            charged = part["charged"] + part["resumed"]
            self.stdout.write(
                f"{name}: metered {part['services']} {part['noun']}(s) at {moment:%Y-%m-%d %H:%M %Z}: "
                f"{charged} charged for {part['hours_charged']} hour(s), {totals}"
            )
            self.stdout.write(
                f"  suspended {part['suspended']}, resumed {part['resumed']}, "
                f"still suspended {part['still_suspended']}, ended {part['ended']} "
                f"(grace {part['grace']}), busy elsewhere {part['busy']}, failed {len(part['failed'])}"
            )
        for failure in summary["failed"]:
            what = ", ".join(
                f"{key.removesuffix('_id')} {value}" for key, value in failure.items() if key != "error"
            )
            self.stderr.write(f"  FAILED {what}: {failure['error']}")

    def _dry_run(self, meters: list, now: dt.datetime, *, as_json: bool) -> None:
        due = {meter.spender.context: metering.dry_run(meter, now=now) for meter in meters}
        if as_json:
            self.stdout.write(dump_json({"dry_run": True, "now": now.isoformat(), "due": due}))
            return
        for meter in meters:
            items = due[meter.spender.context]
            totals = CurrencyTotals()
            for item in items:
                totals.add(item["amount"], item["currency"])
            hours = sum(item["hours"] for item in items)
            self.stdout.write(
                f"{meter.spender.context}: {len(items)} active {meter.noun}(s) have {hours} started "
                f"hour(s) due, {totals} (dry run; suspended services are not tried)"
            )


def _merged(parts: list[dict], *, now: dt.datetime) -> dict:
    """The contexts' summaries added up, each kept under ``contexts``."""
    merged = merge_run_summaries(parts, now=now)
    merged.pop("workers", None)
    merged["contexts"] = {part["context"]: part for part in parts}
    return merged
