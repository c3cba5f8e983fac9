"""Relay outbox rows of subscriptions outside the money transaction to the broker (each
publish confirmed, then the rows marked delivered). Celery beat runs it every few
seconds (job ``relay``); ``--loop`` runs it as a process of its own."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from iaas.common.cli import EXIT_REFUSED, dump_json
from iaas.operations import broker, relay


class Command(BaseCommand):
    help = "Relay pending events of relayed subscriptions to the broker (publisher confirms)."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="keep relaying until interrupted")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds to sleep when idle (--loop)")
        parser.add_argument("--limit", type=int, default=10_000, help="relay at most this many rows per pass")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")

    def handle(self, *args, loop, interval, limit, as_json, **options):
        if not broker.configured() or not settings.IAAS_RELAY_EVENTS:
            raise CommandError(
                "nothing to relay to: no CELERY_BROKER_URL (or IAAS_RELAY_EVENTS is off); "
                "deliver_events applies the relayed subscriptions in-process",
                returncode=EXIT_REFUSED,
            )
        total = relay.RelayReport()
        while True:
            report = relay.relay_pending(limit=limit)
            total.relayed += report.relayed
            total.failed += report.failed
            if not loop:
                break
            if not report.relayed:
                time.sleep(interval)
        summary = {"relayed": total.relayed, "failed": total.failed}
        self.stdout.write(
            dump_json(summary) if as_json else f"relayed {total.relayed}, failed {total.failed}"
        )
        if total.failed:
            raise SystemExit(1)
