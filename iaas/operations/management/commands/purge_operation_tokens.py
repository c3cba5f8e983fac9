"""Delete the used one-time tokens of operator actions older than
``IAAS_OPERATION_TOKEN_RETENTION_DAYS`` (30 by default). Safe to run at any time; run it
daily next to ``purge_idempotency_keys``."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from iaas.operations.models import UsedOperationToken, tokens_purge


class Command(BaseCommand):
    help = "Delete used operator-form tokens past their retention period."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args, dry_run: bool, **options):
        cutoff = timezone.now() - dt.timedelta(days=settings.IAAS_OPERATION_TOKEN_RETENTION_DAYS)
        if dry_run:
            count = UsedOperationToken.objects.filter(used_at__lt=cutoff).count()
            self.stdout.write(f"{count} used operation tokens would be deleted (dry run)")
            return
        self.stdout.write(f"{tokens_purge(older_than=cutoff)} used operation tokens deleted")
