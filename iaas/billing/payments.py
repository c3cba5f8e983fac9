"""Payment providers for top-ups. A provider starts a payment and says whether the
money is there now; a pending top-up is confirmed later (webhook, operator)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class PaymentOutcome:
    succeeded: bool
    provider_reference: str = ""


class PaymentProvider(Protocol):
    name: str

    def start(self, *, top_up_id: uuid.UUID, amount: int, currency: str) -> PaymentOutcome: ...


class SandboxPaymentProvider:
    """Succeeds at once. The default outside production settings."""

    name = "sandbox"

    def start(self, *, top_up_id: uuid.UUID, amount: int, currency: str) -> PaymentOutcome:
        return PaymentOutcome(succeeded=True, provider_reference=f"sandbox-{top_up_id}")


class ManualPaymentProvider:
    """Leaves the top-up pending until it is confirmed (bank transfer, operator)."""

    name = "manual"

    def start(self, *, top_up_id: uuid.UUID, amount: int, currency: str) -> PaymentOutcome:
        return PaymentOutcome(succeeded=False)


def payment_provider() -> PaymentProvider:
    return import_string(settings.IAAS_PAYMENT_PROVIDER)()
