"""Re-encrypt every stored webhook secret under the first of IAAS_SECRET_KEYS: after a
new key was put in front, run this, then the old key can be dropped."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from iaas.notifications import locks, secrets
from iaas.notifications.models import WebhookEndpoint


class Command(BaseCommand):
    help = "Re-encrypt stored webhook secrets with the newest of IAAS_SECRET_KEYS."

    def handle(self, *args, **options):
        done = 0
        for pk in WebhookEndpoint.objects.order_by("pk").values_list("pk", flat=True):
            with transaction.atomic():
                endpoint = locks.endpoint_lock(pk)
                endpoint.secret_encrypted = secrets.reencrypt(endpoint.secret_encrypted)
                if endpoint.previous_secret_encrypted:
                    endpoint.previous_secret_encrypted = secrets.reencrypt(endpoint.previous_secret_encrypted)
                endpoint.save(update_fields=["secret_encrypted", "previous_secret_encrypted"])
            done += 1
        self.stdout.write(f"re-encrypted the secrets of {done} endpoint(s)")
