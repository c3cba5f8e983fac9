"""Delete delivered outbox rows past their retention (IAAS_OUTBOX_RETENTION_DAYS, 14 days
by default), in bounded batches. Pending and failed rows are never deleted. Safe to run
at any time and in two processes at once; run it daily.

Exit status: 0 done (or nothing to do), 2 refused (bad arguments; nothing deleted)."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from iaas.common.cli import (
    EXIT_REFUSED,
    add_dry_run_and_json_arguments,
    dump_json,
    duration_option,
    format_duration,
)
from iaas.contracts import bus


class Command(BaseCommand):
    help = "Delete delivered outbox rows older than the retention period (never pending or failed ones)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            default=None,
            help="delivered at least this long ago (7d, 36h); default IAAS_OUTBOX_RETENTION_DAYS days",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="rows deleted per statement and transaction (default IAAS_OUTBOX_PURGE_BATCH)",
        )
        add_dry_run_and_json_arguments(parser, dry_run_help="count what would be deleted, delete nothing")

    def handle(self, *args, older_than, batch_size, dry_run, as_json, **options):
        retention = (
            duration_option(older_than)
            if older_than is not None
            else dt.timedelta(days=settings.IAAS_OUTBOX_RETENTION_DAYS)
        )
        if retention.total_seconds() <= 0:
            raise CommandError("--older-than must be positive", returncode=EXIT_REFUSED)
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1", returncode=EXIT_REFUSED)
        cutoff = timezone.now() - retention
        if dry_run:
            count = bus.delivered_count(older_than=retention)
        else:
            count = bus.purge_delivered(older_than=retention, batch_size=batch_size)
        if as_json:
            summary = {
                "older_than": format_duration(retention),
                "cutoff": cutoff.isoformat(),
                "dry_run": dry_run,
                ("would_delete" if dry_run else "deleted"): count,
            }
            self.stdout.write(dump_json(summary))
        elif dry_run:
            self.stdout.write(
                f"{count} delivered outbox row(s) older than {format_duration(retention)} "
                "would be deleted (dry run)"
            )
        else:
            self.stdout.write(
                f"{count} delivered outbox row(s) older than {format_duration(retention)} deleted"
            )
