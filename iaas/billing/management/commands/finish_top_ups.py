"""Finish top-ups the provider's answer never reached: pending ones older than --older-than
are asked about again (a payment that succeeded is credited, once; a reference never
recorded is recorded), and Stripe ones unpaid past IAAS_TOP_UP_EXPIRE_AFTER_DAYS are
cancelled at Stripe and failed (their owners told). One top-up at a time, at most --limit a
run; a provider error is logged and the run goes on. Safe to run again and in two
processes at once: every step is idempotent. Run it hourly."""

from __future__ import annotations

import datetime as dt
import logging

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from iaas.billing.payments import finishing
from iaas.common.cli import (
    EXIT_PROBLEMS,
    EXIT_REFUSED,
    add_dry_run_and_json_arguments,
    dump_json,
    duration_option,
    format_duration,
    write_failures,
)

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Ask the payment provider again about top-ups pending longer than --older-than (credit those "
        "paid), and cancel and fail Stripe ones unpaid past IAAS_TOP_UP_EXPIRE_AFTER_DAYS."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than", default="15m", help="pending at least this long (default 15m; 90s, 2h, 1d)"
        )
        parser.add_argument("--limit", type=int, default=500, help="top-ups asked about in one run (500)")
        add_dry_run_and_json_arguments(
            parser, dry_run_help="count the top-ups it would ask about; ask nothing"
        )

    def handle(self, *args, older_than, limit, dry_run, as_json, **options):
        age = duration_option(older_than)
        if age <= dt.timedelta() or limit < 1:
            raise CommandError(
                "--older-than must be positive and --limit at least 1", returncode=EXIT_REFUSED
            )
        now = timezone.now()
        due = finishing.top_ups_due(older_than=age, limit=limit, now=now)
        summary = {
            "now": now.isoformat(),
            "provider": due.provider,
            "older_than": format_duration(age),
            "dry_run": dry_run,
            "to_expire": len(due.to_expire),
            "to_check": len(due.to_check),
        }
        if not dry_run:
            report = finishing.due_finish(due, now=now)
            summary.update(report.as_dict())
        if as_json:
            self.stdout.write(dump_json(summary))
        elif dry_run:
            self.stdout.write(
                f"{due.provider}: would ask about {summary['to_check']} top-up(s) pending longer than "
                f"{summary['older_than']} and expire {summary['to_expire']} (dry run)"
            )
        else:
            self.stdout.write(
                f"{due.provider}: {summary['credited']} credited, {summary['expired']} expired, "
                f"{summary['pending']} still pending, {summary['failed_meanwhile']} failed meanwhile, "
                f"{summary['not_asked']} not asked (no PaymentIntent known), "
                f"{len(summary['failed'])} could not be asked (logged)"
            )
            write_failures(self.stderr, report.errors)
        if not dry_run and report.errors:
            raise SystemExit(EXIT_PROBLEMS)
