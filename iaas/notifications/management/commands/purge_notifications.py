"""Delete old webhook attempts, finished deliveries and emails (notifications.retention)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from iaas.common.cli import dump_json
from iaas.notifications.retention import notifications_purge


class Command(BaseCommand):
    help = "Delete webhook attempts, finished deliveries and sent emails older than the retention."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")

    def handle(self, *args, as_json, **options):
        summary = notifications_purge()
        self.stdout.write(
            dump_json(summary) if as_json else ", ".join(f"deleted {v} {k}" for k, v in summary.items())
        )
