"""Payment providers for top-ups. A provider starts a payment and says whether the money
is there now; a pending top-up is confirmed later (the provider's webhook, an operator).

The rules every provider follows (ARCHITECTURE.md, "Money coming in"): the pending
top-up is committed before the provider is called, the provider is never called inside a
database transaction that may roll back, and its idempotency key is derived from the
top-up's id, so calling it again for the same top-up makes one payment.

``IAAS_PAYMENT_PROVIDER`` names one: ``sandbox`` (the default outside production),
``manual`` (the production default: an operator confirms each top-up), ``stripe``, or a
dotted path to a class of one's own."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from iaas.contracts.errors import PaymentMethodsUnavailable

if TYPE_CHECKING:
    from ..models import PaymentMethod, TopUp


@dataclass(frozen=True)
class PaymentOutcome:
    """What the provider said of a payment it was asked to make.

    ``succeeded``: the money is there (credit now). ``refused``: this attempt was refused
    (a declined card, authentication required), with the provider's ``failure_code`` and
    ``failure_message``. Neither: it waits for the customer or the provider (a card
    payment the customer completes in their browser with ``client_secret``)."""

    succeeded: bool
    provider_reference: str = ""
    client_secret: str | None = None
    refused: bool = False
    failure_code: str = ""
    failure_message: str = ""


@dataclass(frozen=True)
class SetupOutcome:
    """What the provider said when asked to save a payment method: the setup's reference
    and the secret the customer's browser completes it with, or, for a provider that needs
    no customer step, the saved card at once (``method_reference`` and the card)."""

    setup_reference: str
    client_secret: str | None = None
    method_reference: str = ""
    brand: str = ""
    last4: str = ""
    exp_month: int | None = None
    exp_year: int | None = None


class AmountTooSmall(ValueError):
    """Less than the provider can charge in that currency (Stripe: 0.50 EUR)."""

    def __init__(self, minimum: int, currency: str) -> None:
        from iaas.contracts.types import format_minor_units

        self.minimum, self.currency = minimum, currency
        super().__init__(
            f"The smallest payment the provider takes in {currency} is {minimum} minor units "
            f"({format_minor_units(minimum, currency)})."
        )


def check_minimum(provider: PaymentProvider, amount: int, currency: str) -> None:
    """Refuse an amount below what ``provider`` can charge in ``currency`` (AmountTooSmall),
    before anything is committed or sent."""
    minimum = getattr(provider, "minimum_amount", lambda currency: 1)(currency)
    if amount < minimum:
        raise AmountTooSmall(minimum, currency)


class PaymentProvider(Protocol):
    name: str

    def start(self, top_up: TopUp) -> PaymentOutcome:
        """Start paying ``top_up`` with the customer present (on-session)."""

    def charge_saved(self, top_up: TopUp, method: PaymentMethod) -> PaymentOutcome:
        """Pay ``top_up`` with a saved method, the customer absent (off-session)."""

    def setup_start(self, method: PaymentMethod) -> SetupOutcome:
        """Start saving a payment method for ``method``'s owner."""

    def method_remove(self, method: PaymentMethod) -> None:
        """Forget a saved method at the provider (it can no longer be charged)."""


class SandboxPaymentProvider:
    """Succeeds at once, and saves a pretend card at once. The default outside
    production settings, and what black-box tests pay with."""

    name = "sandbox"

    def start(self, top_up: TopUp) -> PaymentOutcome:
        return PaymentOutcome(succeeded=True, provider_reference=f"sandbox-{top_up.id}")

    def charge_saved(self, top_up: TopUp, method: PaymentMethod) -> PaymentOutcome:
        return PaymentOutcome(succeeded=True, provider_reference=f"sandbox-{top_up.id}")

    def setup_start(self, method: PaymentMethod) -> SetupOutcome:
        return SetupOutcome(
            setup_reference=f"sandbox-setup-{method.id}",
            method_reference=f"sandbox-card-{method.id}",
            brand="visa",
            last4="4242",
            exp_month=12,
            exp_year=2099,
        )

    def method_remove(self, method: PaymentMethod) -> None:
        return None


class ManualPaymentProvider:
    """Leaves the top-up pending until it is confirmed (bank transfer, operator)."""

    name = "manual"

    def start(self, top_up: TopUp) -> PaymentOutcome:
        return PaymentOutcome(succeeded=False)

    def charge_saved(self, top_up: TopUp, method: PaymentMethod) -> PaymentOutcome:
        raise PaymentMethodsUnavailable()

    def setup_start(self, method: PaymentMethod) -> SetupOutcome:
        raise PaymentMethodsUnavailable()

    def method_remove(self, method: PaymentMethod) -> None:
        return None


ALIASES = {
    "sandbox": "iaas.billing.payments.SandboxPaymentProvider",
    "manual": "iaas.billing.payments.ManualPaymentProvider",
    "stripe": "iaas.billing.payments.stripe_provider.StripePaymentProvider",
}


def payment_provider() -> PaymentProvider:
    configured = settings.IAAS_PAYMENT_PROVIDER
    return import_string(ALIASES.get(configured, configured))()


def idempotency_key(kind: str, object_id: uuid.UUID) -> str:
    """The provider's idempotency key for one of our objects: the same object, the same
    key, however often (and from whichever host) the call is retried."""
    return f"iaas-{kind}-{object_id}"
