"""Stripe's webhook events, applied to our books once each.

Each event id is recorded (``PaymentEvent``, unique per provider) in the transaction that
applies it, first: a repeated delivery, or two at once, applies nothing twice, and Stripe
may send events in any order. What each type does (ARCHITECTURE.md, "Money coming in"):

- ``payment_intent.succeeded``: the top-up is credited, once, whenever it arrives and
  whatever came before; a success for no top-up we know (or for another amount) is
  parked for an operator, never dropped and never guessed onto a wallet;
- ``payment_intent.payment_failed``: the refused attempt is recorded; the top-up stays
  open (the customer may try another card);
- ``payment_intent.canceled``: the top-up failed, and its owner is told;
- ``charge.refunded``, ``charge.dispute.created``: the money is taken back (a reversal),
  the rest as debt, the wallet frozen where the rules say, the operators told;
- ``setup_intent.*``: a saved card becomes usable, or its setup failed
  (``payments.methods``).

Follow-ups that leave this transaction (freezing a wallet, which locks allowances before
the wallet) run after it commits, and again on a repeated event: each is idempotent."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction

from .. import reversals, services
from ..models import ParkedPayment, PaymentEvent, PaymentReversal, TopUp
from . import PaymentOutcome, methods
from .stripe_provider import NAME, outcome_of

logger = logging.getLogger(__name__)


@dataclass
class Applied:
    """What applying one event did (``outcome``, recorded with the event), and what to do
    once its transaction has committed."""

    outcome: str
    follow_ups: list[Callable[[], None]] = field(default_factory=list)


def event_apply(event: dict[str, Any]) -> str:
    """Apply one verified Stripe event, once. Returns the outcome recorded for it
    (``duplicate`` when it was applied before)."""
    event_type = event["type"]
    payload = event["data"]["object"]
    apply = HANDLERS.get(event_type, _ignored)
    try:
        with transaction.atomic():
            record = _record(event, payload)
            applied = apply(payload, event)
            record.outcome = applied.outcome
            record.save(update_fields=["outcome"])
    except _AlreadyRecorded:
        applied = Applied("duplicate", follow_ups=_repeat_follow_ups(event_type, payload))
    for follow_up in applied.follow_ups:
        follow_up()
    return applied.outcome


class _AlreadyRecorded(Exception):
    pass


def _record(event: dict[str, Any], payload: dict[str, Any]) -> PaymentEvent:
    """Insert the event's record, the transaction's first write (I5): a second delivery
    waits for the first's commit on the unique key and finds it there."""
    try:
        with transaction.atomic():
            return PaymentEvent.objects.create(
                provider=NAME,
                event_id=event["id"],
                type=event["type"][:80],
                object_id=str(payload.get("id", ""))[:120],
                outcome="applying",
                occurred_at=_when(event.get("created")),
            )
    except IntegrityError:
        raise _AlreadyRecorded() from None


def _when(created: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(created, tz=dt.UTC) if created else None


def _ignored(payload: dict[str, Any], event: dict[str, Any]) -> Applied:
    return Applied("ignored")


# --- Which top-up -----------------------------------------------------------------------------


def _top_up_for(payment_intent_id: str | None, metadata: dict[str, Any] | None) -> TopUp | None:
    """The top-up a PaymentIntent pays: named in its metadata (we put it there when we
    created it), or known by its id."""
    named = (metadata or {}).get("top_up_id")
    if named:
        try:
            found = TopUp.objects.filter(pk=uuid.UUID(str(named)), provider=NAME).first()
        except ValueError:
            found = None
        if found is not None:
            return found
    if payment_intent_id:
        return TopUp.objects.filter(provider=NAME, provider_reference=payment_intent_id).first()
    return None


# --- PaymentIntents -----------------------------------------------------------------------------


def _payment_succeeded(intent: dict[str, Any], event: dict[str, Any]) -> Applied:
    top_up = _top_up_for(intent["id"], intent.get("metadata"))
    amount, currency = intent.get("amount_received") or intent["amount"], str(intent["currency"]).upper()
    if top_up is None:
        return _park(intent, event, why="No top-up matches this payment.")
    if (amount, currency) != (top_up.amount, top_up.currency):
        return _park(
            intent,
            event,
            why=f"Paid {amount} {currency} for top-up {top_up.id} of {top_up.amount} {top_up.currency}.",
        )
    if top_up.provider_reference and top_up.provider_reference != intent["id"]:
        # A top-up is paid by the one payment it recorded: another one is money we would
        # otherwise absorb without a credit.
        return _park(
            intent,
            event,
            why=f"A second payment for top-up {top_up.id}, which is paid by {top_up.provider_reference}.",
        )
    services.top_up_confirm(top_up_id=top_up.id, provider_reference=intent["id"])
    return Applied("credited")


def _paid_first(top_up: TopUp, payment_intent_id: str | None) -> bool:
    """A refund or dispute proves its payment succeeded: when that success has not been
    applied yet (its event is late), credit the top-up first, so the money taken back is
    taken from a credit and the late success changes nothing. False when the payment is
    not the top-up's own (parked instead)."""
    if top_up.status == TopUp.Status.SUCCEEDED:
        return True
    if payment_intent_id and top_up.provider_reference and top_up.provider_reference != payment_intent_id:
        return False
    services.top_up_confirm(top_up_id=top_up.id, provider_reference=payment_intent_id or "")
    return True


def _park(intent: dict[str, Any], event: dict[str, Any], *, why: str) -> Applied:
    amount = intent.get("amount_received") or intent["amount"]
    ParkedPayment.objects.get_or_create(
        provider=NAME,
        payment_reference=intent["id"],
        defaults={
            "amount": amount,
            "currency": str(intent["currency"]).upper(),
            "metadata": dict(intent.get("metadata") or {}),
            "why": why[:255],
            "event_id": event["id"],
        },
    )
    subject = f"Payment {intent['id']} parked"
    return Applied("parked", follow_ups=[lambda: reversals.operators_tell(subject, why)])


def _payment_failed(intent: dict[str, Any], event: dict[str, Any]) -> Applied:
    top_up = _top_up_for(intent["id"], intent.get("metadata"))
    if top_up is None:
        return Applied("unmatched")
    outcome = outcome_of(intent)
    services.top_up_record_outcome(
        top_up_id=top_up.id,
        outcome=PaymentOutcome(
            succeeded=False,
            provider_reference=intent["id"],
            refused=True,
            failure_code=outcome.failure_code or "payment_failed",
            failure_message=outcome.failure_message,
        ),
    )
    return Applied("attempt_failed")


def _payment_canceled(intent: dict[str, Any], event: dict[str, Any]) -> Applied:
    top_up = _top_up_for(intent["id"], intent.get("metadata"))
    if top_up is None:
        return Applied("unmatched")
    if top_up.status == TopUp.Status.SUCCEEDED:
        return Applied("already_credited")
    reason = intent.get("cancellation_reason") or "cancelled"
    services.top_up_fail(top_up_id=top_up.id, reason=f"The payment was {_CANCELLATIONS.get(reason, reason)}.")
    return Applied("failed")


_CANCELLATIONS = {
    "abandoned": "abandoned",
    "automatic": "cancelled after it expired",
    "duplicate": "cancelled as a duplicate",
    "failed_invoice": "cancelled",
    "fraudulent": "cancelled as fraudulent",
    "requested_by_customer": "cancelled",
    "void_invoice": "cancelled",
    "cancelled": "cancelled",
}


# --- Money going back out -----------------------------------------------------------------------


def _charge_refunded(charge: dict[str, Any], event: dict[str, Any]) -> Applied:
    top_up = _top_up_for(charge.get("payment_intent"), charge.get("metadata"))
    if top_up is None:
        return _unmatched_reversal(charge["id"], "refund")
    if not _paid_first(top_up, charge.get("payment_intent")):
        return _unmatched_reversal(charge["id"], "refund")
    refunded = int(charge.get("amount_refunded") or 0)
    applied = reversals.reversal_apply(
        top_up_id=top_up.id,
        kind=PaymentReversal.Kind.REFUND,
        reference=f"{charge['id']}:refunded:{refunded}",
        amount=refunded,
        refunded_total=refunded,
    )
    return _reversal_outcome(applied)


def _dispute_created(dispute: dict[str, Any], event: dict[str, Any]) -> Applied:
    top_up = _top_up_for(dispute.get("payment_intent"), dispute.get("metadata"))
    if top_up is None:
        return _unmatched_reversal(dispute["id"], "dispute")
    if not _paid_first(top_up, dispute.get("payment_intent")):
        return _unmatched_reversal(dispute["id"], "dispute")
    applied = reversals.reversal_apply(
        top_up_id=top_up.id,
        kind=PaymentReversal.Kind.DISPUTE,
        reference=dispute["id"],
        amount=int(dispute["amount"]),
    )
    return _reversal_outcome(applied)


def _reversal_outcome(applied: reversals.ReversalApplied) -> Applied:
    if applied.reversal is None:
        return Applied("nothing_to_reverse")
    reversal_id = applied.reversal.id
    return Applied(
        "reversed" if applied.created else "already_reversed",
        follow_ups=[lambda: reversals.reversal_follow_up(reversal_id=reversal_id)],
    )


def _unmatched_reversal(reference: str, kind: str) -> Applied:
    subject = f"Payment {kind} {reference} for no known top-up"
    return Applied(
        "unmatched",
        follow_ups=[
            lambda: reversals.operators_tell(
                subject, "Stripe took money back from a payment we did not credit."
            )
        ],
    )


def _dispute_closed(dispute: dict[str, Any], event: dict[str, Any]) -> Applied:
    """A dispute's end: won (the bank gave the money back to us) or lost. Nothing moves by
    itself: the wallet stays frozen and the reversal stands until an operator decides (a
    won dispute is credited back by an adjustment); they are told."""
    status = dispute.get("status", "")
    subject = f"Dispute {dispute['id']} closed: {status}"
    message = (
        f"Stripe closed dispute {dispute['id']} ({dispute.get('amount')} "
        f"{str(dispute.get('currency', '')).upper()}) as {status}. "
        "The wallet stays frozen until an operator unfreezes it"
        + ("; the money came back: credit the wallet by an adjustment." if status == "won" else ".")
    )
    return Applied(
        f"dispute_{status or 'closed'}"[:40], follow_ups=[lambda: reversals.operators_tell(subject, message)]
    )


def _repeat_follow_ups(event_type: str, payload: dict[str, Any]) -> list[Callable[[], None]]:
    """A repeated event finishes what a crash may have left undone after the first one
    committed: a reversal's freeze, a saved card's details."""
    if event_type == "setup_intent.succeeded":
        return [lambda: methods.card_details_refresh(setup_reference=payload["id"])]
    if event_type not in ("charge.refunded", "charge.dispute.created"):
        return []
    reference = (
        payload["id"]
        if event_type == "charge.dispute.created"
        else f"{payload['id']}:refunded:{int(payload.get('amount_refunded') or 0)}"
    )
    reversal = PaymentReversal.objects.filter(provider=NAME, reference=reference).first()
    if reversal is None or not reversals.needs_freeze(reversal):
        return []
    return [lambda: reversals.reversal_follow_up(reversal_id=reversal.id)]


HANDLERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], Applied]] = {
    "payment_intent.succeeded": _payment_succeeded,
    "payment_intent.payment_failed": _payment_failed,
    "payment_intent.canceled": _payment_canceled,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute_created,
    "charge.dispute.closed": _dispute_closed,
    "setup_intent.succeeded": lambda payload, event: Applied(
        methods.setup_succeeded(payload),
        follow_ups=[lambda: methods.card_details_refresh(setup_reference=payload["id"])],
    ),
    "setup_intent.setup_failed": lambda payload, event: Applied(methods.setup_failed(payload)),
    "setup_intent.canceled": lambda payload, event: Applied(methods.setup_canceled(payload)),
}

# The event types the webhook endpoint at Stripe must send (README).
EVENT_TYPES = sorted(HANDLERS)
