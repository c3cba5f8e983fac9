"""Finishing what a payment provider's answers left open (ARCHITECTURE.md, "Money coming
in"): top-ups still pending after a crash, a lost answer or a webhook that never came, and
parked payments an operator has placed.

A top-up is committed pending before its provider is asked for the money, so a crash in
between, or an answer or webhook lost on the way, leaves it pending while the money may be
there. ``top_ups_finish`` asks the provider again, one top-up at a time and outside any
transaction, through ``services.top_up_start``: idempotent (the provider's key is the
top-up's), it credits a payment that succeeded, once, and records a reference never
recorded. A Stripe top-up still unpaid IAAS_TOP_UP_EXPIRE_AFTER_DAYS after it was opened is
cancelled at Stripe and failed; a success that still arrives later is credited all the same
(a provider's success always credits). Run by ``finish_top_ups``, hourly."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from iaas.common.cli import ItemFailure, run_each
from iaas.contracts.errors import InvalidState

from .. import services
from ..models import ParkedPayment, TopUp
from . import payment_provider
from .stripe_provider import NAME as STRIPE
from .stripe_provider import StripePaymentProvider

logger = logging.getLogger(__name__)

# Stripe keeps an idempotency key 24 hours. A Stripe top-up that never learned its
# PaymentIntent (the answer to the create was lost) is asked again only well inside that
# window: after it, the same key would create a second PaymentIntent, one nobody could pay
# (no browser ever got its client secret). Such a top-up waits for its expiry.
STRIPE_IDEMPOTENCY_WINDOW = dt.timedelta(hours=23)


@dataclass
class FinishReport:
    """What a run did: the top-ups it asked about, by what became of them."""

    credited: int = 0  # the provider had the money: credited (now or just before)
    pending: int = 0  # still waiting for the customer or the provider
    failed_meanwhile: int = 0  # failed before we asked (the provider cancelled it, an operator)
    expired: int = 0  # unpaid past IAAS_TOP_UP_EXPIRE_AFTER_DAYS: cancelled and failed
    # No PaymentIntent known: Stripe's key expired (it waits for its expiry), or an automatic
    # top-up (its runner resumes it).
    not_asked: int = 0
    # Top-ups whose asking raised (the provider unreachable...): logged, asked again next run.
    errors: list[ItemFailure] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def as_dict(self) -> dict:
        return {
            "credited": self.credited,
            "pending": self.pending,
            "failed_meanwhile": self.failed_meanwhile,
            "expired": self.expired,
            "not_asked": self.not_asked,
            # As every run's summary lists the items that failed.
            "failed": [error.as_dict() for error in self.errors],
        }


@dataclass(frozen=True)
class Due:
    """The top-ups a run will ask about: the stale ones first (to expire), then the others
    older than the run's ``older_than``, the newest first (a crash or a lost answer is
    finished while it is fresh; the oldest ones get their last look when they expire)."""

    provider: str
    to_expire: list[uuid.UUID]
    to_check: list[uuid.UUID]


def expire_after() -> dt.timedelta:
    return dt.timedelta(days=settings.IAAS_TOP_UP_EXPIRE_AFTER_DAYS)


def expiry_reason() -> str:
    """What the owner is told (TopUpFailed) when an unpaid top-up expires."""
    days = settings.IAAS_TOP_UP_EXPIRE_AFTER_DAYS
    return f"The payment was not completed within {days} day{'s' if days != 1 else ''}."


def top_ups_due(*, older_than: dt.timedelta, limit: int, now: dt.datetime) -> Due:
    """At most ``limit`` pending top-ups of the configured provider older than ``older_than``:
    for Stripe, those older than IAAS_TOP_UP_EXPIRE_AFTER_DAYS first, oldest first."""
    provider = payment_provider().name
    pending = TopUp.objects.filter(status=TopUp.Status.PENDING, provider=provider)
    to_expire: list[uuid.UUID] = []
    recent = pending.filter(created_at__lt=now - older_than)
    if provider == STRIPE:
        stale_before = now - expire_after()
        to_expire = list(
            pending.filter(created_at__lt=stale_before)
            .order_by("created_at", "id")
            .values_list("id", flat=True)[:limit]
        )
        recent = recent.filter(created_at__gte=stale_before)
    to_check = list(
        recent.order_by("-created_at", "-id").values_list("id", flat=True)[: limit - len(to_expire)]
    )
    return Due(provider=provider, to_expire=to_expire, to_check=to_check)


def top_up_finish(*, top_up_id: uuid.UUID, now: dt.datetime) -> str:
    """Ask the provider about one pending top-up, and record what it says (credit it when
    the money is there). Returns what became of it: credited, pending, failed_meanwhile
    or not_asked."""
    top_up = TopUp.objects.get(pk=top_up_id)
    if top_up.status != TopUp.Status.PENDING:
        return _outcome(top_up)
    # A Stripe top-up whose PaymentIntent was never recorded. An automatic top-up's is
    # created by its runner with other parameters (a saved card, confirmed at once) under
    # the same key, which Stripe refuses to reuse for ours: the runner resumes it. Past the
    # key's window, asking would create a second PaymentIntent: it waits for its expiry.
    unknown_intent = top_up.provider == STRIPE and not top_up.provider_reference
    if unknown_intent and (
        top_up.origin == TopUp.Origin.AUTO or top_up.created_at < now - STRIPE_IDEMPOTENCY_WINDOW
    ):
        return "not_asked"
    return _outcome(services.top_up_start(top_up_id=top_up_id).top_up)


def top_up_expire(*, top_up_id: uuid.UUID) -> str:
    """A Stripe top-up unpaid past IAAS_TOP_UP_EXPIRE_AFTER_DAYS: asked once more (a payment
    that succeeded is credited, not cancelled), then its PaymentIntent cancelled at Stripe
    and the top-up failed, its owner told. Returns expired, or what it became instead."""
    top_up = TopUp.objects.get(pk=top_up_id)
    if top_up.status != TopUp.Status.PENDING:
        return _outcome(top_up)
    if top_up.provider_reference:
        top_up = services.top_up_start(top_up_id=top_up_id).top_up
        if top_up.status != TopUp.Status.PENDING:
            return _outcome(top_up)
        # One that succeeds in between cannot be cancelled (Stripe refuses, and cancel lets
        # it be): its webhook credits the failed top-up all the same.
        StripePaymentProvider().cancel(top_up.provider_reference)
    # Without a reference there is nothing to cancel: no customer's browser got a client
    # secret to pay with; an automatic charge whose answer was lost is credited by its
    # webhook whenever that comes (a success always credits, a failed top-up too).
    try:
        services.top_up_fail(top_up_id=top_up_id, reason=expiry_reason())
    except InvalidState:
        # Succeeded meanwhile (its webhook): credited, as it should be.
        return _outcome(TopUp.objects.get(pk=top_up_id))
    return "expired"


def _outcome(top_up: TopUp) -> str:
    return {
        TopUp.Status.SUCCEEDED: "credited",
        TopUp.Status.FAILED: "failed_meanwhile",
    }.get(top_up.status, "pending")


def top_ups_finish(*, older_than: dt.timedelta, limit: int, now: dt.datetime | None = None) -> FinishReport:
    """Finish at most ``limit`` pending top-ups of the configured provider older than
    ``older_than`` (``top_ups_due``)."""
    now = now or timezone.now()
    return due_finish(top_ups_due(older_than=older_than, limit=limit, now=now), now=now)


def due_finish(due: Due, *, now: dt.datetime) -> FinishReport:
    """One top-up at a time: expire the stale Stripe ones, ask about the rest. A provider
    error is logged and listed, and the run goes on with the next."""
    report = FinishReport()

    def identify(top_up_id: uuid.UUID) -> tuple[str, dict[str, str]]:
        return f"top-up {top_up_id}", {"top_up_id": str(top_up_id)}

    for work, items, description in (
        (lambda top_up_id: top_up_expire(top_up_id=top_up_id), due.to_expire, "expiring top-ups"),
        (lambda top_up_id: top_up_finish(top_up_id=top_up_id, now=now), due.to_check, "finishing top-ups"),
    ):
        outcomes, errors = run_each(items, work, description=description, identify=identify, logger=logger)
        for outcome in outcomes:
            report.count(outcome)
        report.errors += errors
    return report


def parked_payment_resolve(
    *, parked_payment_id: uuid.UUID, resolution: str, operator_id: int
) -> ParkedPayment:
    """An operator placed a parked payment (credited it by an adjustment, refunded it at the
    provider...): recorded once, with what they did and who they are. The money itself moves
    only through the services that move it; this closes the case, so reconcile stops
    flagging it."""
    resolution = resolution.strip()
    if not resolution:
        raise InvalidState("Say how the payment was resolved.")
    resolved = ParkedPayment.objects.filter(pk=parked_payment_id, resolved_at__isnull=True).update(
        resolved_at=timezone.now(), resolved_by_id=operator_id, resolution=resolution
    )
    if not resolved:
        raise InvalidState("This parked payment was resolved already.")
    return ParkedPayment.objects.get(pk=parked_payment_id)
