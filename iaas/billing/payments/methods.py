"""Saved payment methods: the cards a customer keeps with the payment provider so that
automatic top-ups can charge them while the customer is away.

Saving one follows the rule for money coming in (ARCHITECTURE.md): the pending method is
committed first, then the provider is asked, outside any transaction, to start the
setup (Stripe: a SetupIntent, completed in the customer's browser with its
``client_secret``), and what it said is recorded. The card becomes ``active`` when the
provider says the setup succeeded (Stripe's webhook: ``setup_succeeded``, applied in the
event's transaction, so it never calls the provider; the card's brand and digits are
fetched after that transaction, by ``card_details_refresh``). A provider that saves the
card at once (the sandbox) activates it at once.

Removing a method takes it out of every auto top-up that uses it, under those wallets'
locks, before the card is detached at the provider: from that moment nothing charges
it."""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from iaas.contracts.errors import NotFound, PaymentMethodsUnavailable, PaymentProviderUnavailable

from ..locks import payment_method_lock, wallets_lock
from ..models import AutoTopUp, PaymentMethod, Wallet
from . import ManualPaymentProvider, SetupOutcome, payment_provider

logger = logging.getLogger(__name__)

# Bounded: a removal retries only when an auto top-up started using the method between
# its read and its lock (at most once in practice: after the lock nobody can).
REMOVE_ATTEMPTS = 5


@dataclass(frozen=True)
class MethodStarted:
    """A payment method after its provider was asked to save it, and the secret the
    customer's browser completes the setup with (None when there is nothing to complete)."""

    method: PaymentMethod
    client_secret: str | None = None


# --- Saving a card -------------------------------------------------------------------------------


def payment_method_open(*, owner_id: int) -> PaymentMethod:
    """Commit a pending payment method with the configured provider, before the provider
    is asked for anything. The manual provider (an operator confirms each top-up) keeps no
    cards: PaymentMethodsUnavailable, and nothing is committed."""
    provider = payment_provider()
    if isinstance(provider, ManualPaymentProvider):
        raise PaymentMethodsUnavailable()
    with transaction.atomic():
        return PaymentMethod.objects.create(owner_id=owner_id, provider=provider.name)


def payment_method_setup(*, method_id: uuid.UUID) -> MethodStarted:
    """Ask the method's provider to start saving it, outside any transaction, and record
    its answer: the setup's reference, and the card itself when the provider saved it at
    once. Safe to call again for the same method (a retried request): the provider's
    idempotency key is the method's, so it is one setup, with the same secret. A method no
    longer pending is answered as it is, without asking the provider.

    A provider that cannot save cards (PaymentMethodsUnavailable) leaves the method
    ``failed``, saying so; an unreachable one (PaymentProviderUnavailable) leaves it
    pending, for the retry."""
    method = PaymentMethod.objects.get(pk=method_id)
    if method.status != PaymentMethod.Status.PENDING:
        return MethodStarted(method)
    provider = payment_provider()
    if provider.name != method.provider:
        raise PaymentMethodsUnavailable(
            f"This payment method was started with the {method.provider} provider, which is no "
            f"longer the configured one ({provider.name}); start a new one."
        )
    try:
        outcome = provider.setup_start(method)
    except PaymentMethodsUnavailable as refusal:
        PaymentMethod.objects.filter(pk=method.pk, status=PaymentMethod.Status.PENDING).update(
            status=PaymentMethod.Status.FAILED, failure_message=refusal.detail[:255]
        )
        raise
    _setup_record(method, outcome)
    method.refresh_from_db()
    return MethodStarted(
        method, outcome.client_secret if method.status == PaymentMethod.Status.PENDING else None
    )


def payment_method_start(*, owner_id: int) -> MethodStarted:
    """Save a new card for ``owner_id``: ``payment_method_open``, then
    ``payment_method_setup``."""
    method = payment_method_open(owner_id=owner_id)
    return payment_method_setup(method_id=method.id)


def _setup_record(method: PaymentMethod, outcome: SetupOutcome) -> None:
    """Record the provider's setup reference (once), and activate the method with its card
    when the provider saved it at once. Conditional UPDATEs, no lock: the provider's
    webhook may be recording the same facts at the same moment."""
    if outcome.setup_reference:
        PaymentMethod.objects.filter(pk=method.pk, setup_reference="").update(
            setup_reference=outcome.setup_reference
        )
    if outcome.method_reference:
        _activate(method.pk, outcome.method_reference, outcome)


def _activate(method_id: uuid.UUID, method_reference: str, card: SetupOutcome | None = None) -> bool:
    """Make a pending (or failed: the provider says otherwise now) method active with the
    provider's reference for it, and its card details when known. False when the method is
    active or removed already."""
    fields: dict[str, Any] = {
        "status": PaymentMethod.Status.ACTIVE,
        "provider_method_id": method_reference,
        "activated_at": timezone.now(),
        "failure_message": "",
    }
    if card is not None and card.brand:
        fields.update(brand=card.brand, last4=card.last4, exp_month=card.exp_month, exp_year=card.exp_year)
    activated = PaymentMethod.objects.filter(
        pk=method_id, status__in=[PaymentMethod.Status.PENDING, PaymentMethod.Status.FAILED]
    ).update(**fields)
    return bool(activated)


# --- Removing one --------------------------------------------------------------------------------


def payment_method_remove(*, owner_id: int, method_id: uuid.UUID) -> PaymentMethod:
    """Remove one of the owner's saved methods: another customer's, or a missing one, is
    NotFound. It is marked ``removed`` (kept: top-ups point at it) and every auto top-up
    using it is deleted, its wallet's threshold cleared, under the wallets' locks; then,
    outside the transaction, the card is detached at the provider. Removing a removed
    method detaches it again (a detach that failed before is finished) and changes nothing
    else. An unreachable provider (PaymentProviderUnavailable) leaves the method removed
    on our side: nothing charges it; a retry detaches it."""
    method = _removed(owner_id=owner_id, method_id=method_id)
    provider = payment_provider()
    if method.provider == provider.name:
        provider.method_remove(method)
    else:
        logger.warning(
            "payment method %s was saved with %s, not the configured %s: not detached there",
            method.pk,
            method.provider,
            provider.name,
        )
    return method


def _removed(*, owner_id: int, method_id: uuid.UUID) -> PaymentMethod:
    """Mark the method removed and take it out of its auto top-ups, in one transaction:
    the wallets of those auto top-ups locked first, then the method (the lock order: an
    auto top-up being set up locks its wallet, then the method). An auto top-up that took
    the method between the read of its wallets and the method's lock is seen after the
    lock; then the transaction is tried again with its wallet too."""
    for _ in range(REMOVE_ATTEMPTS):
        with transaction.atomic():
            using = _wallets_using(method_id)
            locked = wallets_lock(using, skip_locked=False)
            method = payment_method_lock(method_id, owner_id=owner_id)
            if method is None:
                raise NotFound("No such payment method.")
            if _wallets_using(method_id) - locked.keys():
                transaction.set_rollback(True)
                continue
            if method.status != PaymentMethod.Status.REMOVED:
                method.status = PaymentMethod.Status.REMOVED
                method.removed_at = timezone.now()
                method.save(update_fields=["status", "removed_at"])
            if locked:
                AutoTopUp.objects.filter(payment_method_id=method_id).delete()
                Wallet.objects.filter(pk__in=list(locked)).update(
                    auto_top_up_below=None, updated_at=timezone.now()
                )
            return method
    raise RuntimeError(f"payment method {method_id}: its auto top-ups kept changing; try again")


def _wallets_using(method_id: uuid.UUID) -> set[uuid.UUID]:
    return set(AutoTopUp.objects.filter(payment_method_id=method_id).values_list("wallet_id", flat=True))


# --- The provider's word (Stripe's webhook: setup_intent.*) ---------------------------------------------


def _method_for(setup_intent: dict[str, Any]) -> PaymentMethod | None:
    """The method a SetupIntent saves: known by its id (recorded once the provider answered),
    or named in its metadata (we put it there when we asked for the setup)."""
    from .stripe_provider import NAME

    query = Q(provider=NAME, setup_reference=setup_intent.get("id") or "-")
    named = (setup_intent.get("metadata") or {}).get("payment_method_id")
    with contextlib.suppress(ValueError):  # not a UUID: not ours
        query |= Q(provider=NAME, pk=uuid.UUID(str(named)))
    return PaymentMethod.objects.filter(query).first()


def _method_reference(setup_intent: dict[str, Any]) -> tuple[str, SetupOutcome | None]:
    """The saved card's reference (pm_...) and, when the event carries it expanded, its
    card details."""
    saved = setup_intent.get("payment_method")
    if isinstance(saved, dict):
        card = saved.get("card") or {}
        return str(saved.get("id") or ""), SetupOutcome(
            setup_reference="",
            method_reference=str(saved.get("id") or ""),
            brand=card.get("brand") or "",
            last4=card.get("last4") or "",
            exp_month=card.get("exp_month"),
            exp_year=card.get("exp_year"),
        )
    return str(saved or ""), None


def setup_succeeded(setup_intent: dict[str, Any]) -> str:
    """The card is saved: the method becomes active (its card details, when the event does
    not carry them, come from ``card_details_refresh`` after this transaction). Called in
    the event's transaction: no provider call. Returns what it did."""
    method = _method_for(setup_intent)
    if method is None:
        return "unmatched"
    PaymentMethod.objects.filter(pk=method.pk, setup_reference="").update(setup_reference=setup_intent["id"])
    reference, card = _method_reference(setup_intent)
    if method.status == PaymentMethod.Status.REMOVED:
        # Removed before the customer completed the setup: remember the card, so that
        # card_details_refresh can detach it once this transaction has committed.
        PaymentMethod.objects.filter(pk=method.pk, provider_method_id="").update(provider_method_id=reference)
        return "method_removed"
    if method.status == PaymentMethod.Status.ACTIVE:
        return "method_active_already"
    if not reference:
        return "no_payment_method"
    _activate(method.pk, reference, card)
    return "method_active"


def setup_failed(setup_intent: dict[str, Any]) -> str:
    """An attempt to save the card failed (declined, authentication failed): the method
    stays pending, with the provider's words, since the customer may try again with the
    same setup (Stripe keeps the SetupIntent open); only a cancelled setup fails it."""
    method = _method_for(setup_intent)
    if method is None:
        return "unmatched"
    error = setup_intent.get("last_setup_error") or {}
    message = (error.get("message") or error.get("code") or "The card could not be saved.")[:255]
    updated = PaymentMethod.objects.filter(pk=method.pk, status=PaymentMethod.Status.PENDING).update(
        failure_message=message
    )
    return "attempt_failed" if updated else "ignored"


def setup_canceled(setup_intent: dict[str, Any]) -> str:
    """The setup was cancelled (it will never save a card): a pending method fails."""
    method = _method_for(setup_intent)
    if method is None:
        return "unmatched"
    updated = PaymentMethod.objects.filter(pk=method.pk, status=PaymentMethod.Status.PENDING).update(
        status=PaymentMethod.Status.FAILED, failure_message="The card setup was cancelled."
    )
    return "method_failed" if updated else "ignored"


def card_details_refresh(*, setup_reference: str) -> None:
    """After a ``setup_intent.succeeded`` committed, outside any transaction: bring the
    provider's card up to date with our record. An active method whose card details are
    still unknown gets them (brand, last four digits, expiry) from Stripe; a method the
    customer removed before the setup completed has its card detached, so nothing can
    charge it. Best effort: an unreachable provider is logged (the card works without
    its details; a removed method's detach is finished by removing it again)."""
    from .stripe_provider import NAME, StripePaymentProvider

    method = PaymentMethod.objects.filter(provider=NAME, setup_reference=setup_reference).first()
    if method is None or not method.provider_method_id:
        return
    provider = StripePaymentProvider()
    try:
        if method.status == PaymentMethod.Status.REMOVED:
            provider.method_remove(method)
        elif method.status == PaymentMethod.Status.ACTIVE and not method.brand:
            card = provider.method_card(method.provider_method_id)
            PaymentMethod.objects.filter(pk=method.pk, brand="").update(
                brand=card.brand[:20],
                last4=card.last4[:4],
                exp_month=card.exp_month,
                exp_year=card.exp_year,
            )
    except PaymentProviderUnavailable:
        logger.warning("payment method %s: Stripe unreachable, card not brought up to date", method.pk)
