"""Ask the customers whose address is not verified yet (those from before emails, above
all) to confirm it: each gets the link once (a customer sent one within the cooldown, or
with no address, is skipped). Until they click, they get no email but the link."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from iaas.common.cli import dump_json
from iaas.notifications import emails
from iaas.notifications.models import EmailSettings


class Command(BaseCommand):
    help = "Send a verification link to every active customer whose email address is not verified."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count them, send nothing")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")

    def handle(self, *args, dry_run, as_json, **options):
        customers = get_user_model().objects.filter(is_active=True, is_staff=False).order_by("pk")
        verified = set(EmailSettings.objects.exclude(verified_at=None).values_list("owner_id", flat=True))
        sent = skipped = 0
        for owner_id in customers.values_list("pk", flat=True).iterator():
            if owner_id in verified:
                continue
            if dry_run:
                sent += 1
                continue
            try:
                emails.verification_resend(owner_id=owner_id)
            except (emails.VerificationTooSoon, emails.AlreadyVerified):
                skipped += 1
            else:
                sent += 1
        summary = {"dry_run": dry_run, "sent": sent, "skipped": skipped}
        self.stdout.write(dump_json(summary) if as_json else f"links sent {sent}, skipped {skipped}")
