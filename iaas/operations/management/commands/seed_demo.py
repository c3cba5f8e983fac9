"""Demo data for the first README command: operator logins (a superuser, a Finance and a
Support operator), and a customer with a funded wallet and a service in each selling
context (a cloud server, a hosting subscription). Safe to run again: it changes nothing
that exists, but prints a new API key for the customer each time (keys are stored hashed,
so an earlier one cannot be shown), and gives a demo operator new recovery codes when
theirs are used up.

The superuser and the Finance operator need a second factor: they get an authenticator
(its secret printed, to add to an app) and recovery codes (printed), so the demo logins
work from the first run. Known passwords and printed secrets are for development only:
production settings refuse this command (IAAS_DEMO_DATA_ALLOWED)."""

from __future__ import annotations

import os
from base64 import b32encode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from iaas.api import keys as api_keys
from iaas.billing import services as billing_services
from iaas.billing.models import Wallet
from iaas.contracts import bus
from iaas.contracts.errors import DomainError
from iaas.operations import second_factor
from iaas.operations.roles import FINANCE, SUPPORT, install_operator_groups
from iaas.spending.apps import selling_context_configs

OPERATOR = (
    "operator",
    "operator@example.com",
    os.environ.get("IAAS_DEMO_OPERATOR_PASSWORD", "operator-demo-2026"),
)
FINANCE_OPERATOR = (
    "finance",
    "finance@example.com",
    os.environ.get("IAAS_DEMO_FINANCE_PASSWORD", "finance-demo-2026"),
)
SUPPORT_OPERATOR = (
    "support",
    "support@example.com",
    os.environ.get("IAAS_DEMO_SUPPORT_PASSWORD", "support-demo-2026"),
)
CUSTOMER = (
    "demo",
    "demo@example.com",
    os.environ.get("IAAS_DEMO_CUSTOMER_PASSWORD", "customer-demo-2026"),
)
DEMO_TOP_UP = 5_000  # 50.00 EUR


def ensure_user(username: str, email: str, password: str, **flags):
    user, created = get_user_model().objects.get_or_create(
        username=username, defaults={"email": email, **flags}
    )
    if created:
        user.set_password(password)
        user.save(update_fields=["password"])
    return user


def ensure_second_factor(user) -> list[str]:
    """An authenticator and recovery codes for a demo operator who must have them; the
    lines that print them."""
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=second_factor.AUTHENTICATOR, confirmed=True)
    codes = list(
        StaticToken.objects.filter(device__user=user, device__confirmed=True).values_list("token", flat=True)
    )
    if not codes:
        codes = second_factor.recovery_codes_issue(user=user)
    return [
        f"    {user.username:<10} secret {b32encode(device.bin_key).decode()}",
        f"               recovery codes {' '.join(sorted(codes))}",
    ]


class Command(BaseCommand):
    help = "Create the demo operators and the demo customer (idempotent) and print their logins."

    def handle(self, *args, **options):
        if not settings.IAAS_DEMO_DATA_ALLOWED:
            raise CommandError("seed_demo makes logins with known passwords: not under production settings.")
        with transaction.atomic():
            install_operator_groups()
            operator = ensure_user(*OPERATOR, is_staff=True, is_superuser=True)
            finance = ensure_user(*FINANCE_OPERATOR, is_staff=True)
            finance.groups.add(Group.objects.get(name=FINANCE))
            second_factors = [ensure_second_factor(user) for user in (operator, finance)]
            support = ensure_user(*SUPPORT_OPERATOR, is_staff=True)
            support.groups.add(Group.objects.get(name=SUPPORT))
            customer = ensure_user(*CUSTOMER)
            wallet = Wallet.objects.filter(owner=customer, currency="EUR").first()
            if wallet is None:
                wallet = billing_services.wallet_create(owner_id=customer.id, currency="EUR")
        billing_services.top_up_create(
            wallet_id=wallet.id, owner_id=customer.id, amount=DEMO_TOP_UP, reference="demo-seed"
        )
        self.buy_demo_services(customer, wallet)
        # Settle the purchases now rather than waiting for the delivery worker.
        bus.deliver_pending()
        wallet.refresh_from_db()
        self.stdout.write(
            "\n".join(
                [
                    "Demo logins:",
                    "  operators (Django admin, http://127.0.0.1:8000/admin/):",
                    f"    superuser  {OPERATOR[0]} / {OPERATOR[2]}",
                    f"    Finance    {FINANCE_OPERATOR[0]} / {FINANCE_OPERATOR[2]}",
                    f"    Support    {SUPPORT_OPERATOR[0]} / {SUPPORT_OPERATOR[2]}  (no second factor)",
                    "  their second factor (development only): a code of an authenticator app",
                    "  holding the secret, or a recovery code (each works once):",
                    *(line for lines in second_factors for line in lines),
                    f"  customer (API, http://127.0.0.1:8000/api/docs/): {CUSTOMER[0]} / {CUSTOMER[2]}",
                    f"    API key: {api_keys.api_key_create(owner_id=customer.pk, name='demo').key}"
                    "  (curl -H 'Authorization: Token <key>' ...)",
                    f"  the customer's EUR wallet: {wallet.id} "
                    f"(balance {wallet.money(wallet.balance)}, available {wallet.money(wallet.available)})",
                ]
            )
        )

    def buy_demo_services(self, customer, wallet) -> None:
        """A service in each selling context (its demo module says which), bought through
        the context's services like any customer's, once."""
        try:
            for config in selling_context_configs():
                config.demo_module().seed_purchase(owner_id=customer.id, wallet_id=wallet.id)
        except DomainError as refusal:  # e.g. the catalog was changed: the logins still work
            self.stderr.write(f"demo purchases skipped: {refusal.detail}")
