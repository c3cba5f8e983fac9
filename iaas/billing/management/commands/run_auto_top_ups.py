"""Charge the saved cards of wallets whose automatic top-up is due (their available balance
went below the threshold their owner chose): iaas.billing.payments.auto. Run it every few
seconds (the job ``auto_top_up``; without a broker, ``deliver_events --loop`` runs one
round per pass as well).

Safe to run again and in several processes at once: each run claims the due rows no
other run holds (SKIP LOCKED, with a lease), a wallet has at most one automatic top-up in
flight (a database constraint), and each payment's idempotency key is its top-up's id.
Exits 1 when an attempt failed unexpectedly (logged; tried again later)."""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from iaas.billing.payments import auto
from iaas.common.cli import EXIT_PROBLEMS, dump_json


class Command(BaseCommand):
    help = "Charge saved cards for the automatic top-ups that are due."

    def add_arguments(self, parser):
        parser.add_argument(
            "--limit", type=int, default=auto.CLAIM_BATCH, help="attempt at most this many wallets"
        )
        parser.add_argument("--at", default=None, help="the run's moment (ISO 8601; default: now)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")

    def handle(self, *args, limit, at, as_json, **options):
        if limit < 1:
            raise CommandError("--limit is at least 1")
        now = dt.datetime.fromisoformat(at) if at else timezone.now()
        summary = auto.auto_top_ups_run(now=now, limit=limit)
        if as_json:
            self.stdout.write(dump_json(summary))
        else:
            self.stdout.write(", ".join(f"{name} {count}" for name, count in summary.items()))
        if summary["errors"]:
            raise SystemExit(EXIT_PROBLEMS)
