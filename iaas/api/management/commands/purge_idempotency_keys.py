"""Delete stored Idempotency-Key responses past their replay window (24 hours by
default). Safe to run at any time and in two processes at once; run it daily."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.utils import timezone

from iaas.api.idempotency import purge_expired, ttl
from iaas.api.models import IdempotencyKey


class Command(BaseCommand):
    help = "Delete Idempotency-Key records older than the replay window."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args, dry_run: bool, **options):
        if dry_run:
            count = IdempotencyKey.objects.filter(created_at__lte=timezone.now() - ttl()).count()
            self.stdout.write(f"{count} expired idempotency keys would be deleted (dry run)")
            return
        count = purge_expired()
        self.stdout.write(f"{count} expired idempotency keys deleted")
