"""Demo data for the first README command: an operator login and a customer with a
funded wallet. Safe to run again: it changes nothing that exists."""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from iaas.billing import services as billing_services
from iaas.billing.models import Wallet

OPERATOR = (
    "operator",
    "operator@example.com",
    os.environ.get("IAAS_DEMO_OPERATOR_PASSWORD", "operator-demo-2026"),
)
CUSTOMER = (
    "demo",
    "demo@example.com",
    os.environ.get("IAAS_DEMO_CUSTOMER_PASSWORD", "customer-demo-2026"),
)
DEMO_TOP_UP = 5_000  # 50.00 EUR


class Command(BaseCommand):
    help = "Create the demo operator and demo customer (idempotent) and print their logins."

    def handle(self, *args, **options):
        User = get_user_model()
        with transaction.atomic():
            operator, created = User.objects.get_or_create(
                username=OPERATOR[0],
                defaults={"email": OPERATOR[1], "is_staff": True, "is_superuser": True},
            )
            if created:
                operator.set_password(OPERATOR[2])
                operator.save(update_fields=["password"])
            customer, created = User.objects.get_or_create(
                username=CUSTOMER[0], defaults={"email": CUSTOMER[1]}
            )
            if created:
                customer.set_password(CUSTOMER[2])
                customer.save(update_fields=["password"])
            wallet = Wallet.objects.filter(owner=customer, currency="EUR").first()
            if wallet is None:
                wallet = billing_services.wallet_create(owner_id=customer.id, currency="EUR")
        billing_services.top_up_create(
            wallet_id=wallet.id, owner_id=customer.id, amount=DEMO_TOP_UP, reference="demo-seed"
        )
        self.stdout.write(
            "\n".join(
                [
                    "Demo logins:",
                    f"  operator (Django admin, http://127.0.0.1:8000/admin/): {OPERATOR[0]} / {OPERATOR[2]}",
                    f"  customer (API, http://127.0.0.1:8000/api/docs/):     {CUSTOMER[0]} / {CUSTOMER[2]}",
                    f"  the customer's EUR wallet: {wallet.id}",
                ]
            )
        )
