"""Automatic top-ups: when a write takes a wallet's available balance below the threshold
its owner chose, the saved card is charged the chosen amount, off-session, one top-up at
a time, outside the write's transaction.

Three steps, so that a purchase pays nothing for it and no card is charged under a lock:

1. The write that crosses the threshold (a reserve, one by one or in a batch; an
   operator's debit; a payment reversal) publishes AutoTopUpDue with its own events, in
   the same outbox statement (``notices.balance_alerts``): the purchase keeps its
   statement count.
2. Billing's handler (``auto_top_up_mark_due``) marks the wallet's AutoTopUp due. It only
   writes; it runs inside the outbox delivery's transaction.
3. The runner (``auto_top_ups_run``: the ``run_auto_top_ups`` command, and once per pass
   of ``deliver_events --loop`` where no broker runs the schedule) claims due rows (SKIP
   LOCKED, with a lease), decides for each under its wallet's lock whether a top-up is
   still wanted, commits a pending top-up (at most one automatic one in flight per
   wallet: a partial unique constraint), and only then, outside any transaction, asks the
   provider to charge the card (its idempotency key is the top-up's id: a retried or
   resumed attempt is one payment).

A refusal (declined, authentication required) fails the top-up, which tells the customer
(the ``top_up.failed`` webhook and email) what happened and what to do, and the next
attempt waits (``RETRY_DELAYS``), never more than ``IAAS_AUTO_TOP_UP_DAILY_ATTEMPTS``
top-ups a day. A success, whenever it is known (the runner, or the provider's webhook),
clears the failures; a wallet still below its threshold after it is due again."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from iaas.contracts.errors import NotFound, PaymentProviderUnavailable

from .. import services
from ..locks import auto_top_up_lock, auto_top_ups_claim, payment_method_lock, wallet_lock
from ..models import AutoTopUp, PaymentMethod, TopUp, Wallet
from . import PaymentOutcome, check_minimum, payment_provider

logger = logging.getLogger(__name__)

# How long the next attempt waits after the 1st, 2nd, 3rd (and every later) refusal in a
# row. Card refusals do not clear in seconds: an hour gives the customer time to read the
# email and act; the daily cap bounds the attempts in any case.
RETRY_DELAYS = (dt.timedelta(hours=1), dt.timedelta(hours=4), dt.timedelta(hours=12))
# The window of the daily cap on attempts.
CAP_WINDOW = dt.timedelta(hours=24)
# A payment the provider is still processing: look again after this long (its webhook
# usually answers first).
WAIT_FOR_PROVIDER = dt.timedelta(minutes=15)
# The provider could not be reached: nothing failed; try again after this long.
PROVIDER_UNAVAILABLE_DELAY = dt.timedelta(minutes=1)
# Something unexpected went wrong (logged): try again after this long.
ERROR_DELAY = dt.timedelta(minutes=15)
# A frozen wallet's due automatic top-up is looked at again after this long (it waits for
# the wallet to be unfrozen).
FROZEN_RECHECK = dt.timedelta(hours=1)
# A runner's claim on a row, longer than a run's attempts take (each is bounded by the
# provider's timeouts); a runner that dies lets its rows go when it expires.
CLAIM_LEASE = dt.timedelta(minutes=10)
# Rows one run claims at most.
CLAIM_BATCH = 50


class PaymentMethodNotUsable(ValueError):
    """The payment method chosen for an automatic top-up cannot be charged (not active, or
    saved with another provider). The API answers it as the ``payment_method`` field's
    400."""


# --- The owner's settings ---------------------------------------------------------------------------


def _checked_amount(name: str, value: int) -> int:
    if type(value) is not int or not 1 <= value <= settings.IAAS_MAX_TOP_UP:
        raise ValueError(f"an auto top-up's {name} is 1 to {settings.IAAS_MAX_TOP_UP} minor units")
    return value


def auto_top_up_set(
    *, wallet_id: uuid.UUID, owner_id: int, threshold: int, amount: int, payment_method_id: uuid.UUID
) -> AutoTopUp:
    """Create or change the wallet's automatic top-up: when the available balance drops
    below ``threshold``, charge ``amount`` (both minor units, 1 to the top-up limit) to the
    owner's active saved method ``payment_method_id``.

    Another customer's wallet is WalletNotFound, another customer's (or a missing) method
    NotFound, both as missing ones; a method that is not active is PaymentMethodNotUsable.
    Under the wallet's lock (then the method's, then the row's), so a reserve sees the old
    threshold or the new one, and a removal of the method waits or is waited for.

    A wallet already below the new threshold is due at once: who says "keep me above 10"
    while at 5 expects a top-up. A new payment method starts afresh (no failures, no
    waiting); the same method keeps its backoff."""
    _checked_amount("threshold", threshold)
    _checked_amount("amount", amount)
    now = timezone.now()
    with transaction.atomic():
        wallet = wallet_lock(wallet_id, owner_id=owner_id)
        method = payment_method_lock(payment_method_id, owner_id=owner_id)
        if method is None:
            raise NotFound("No such payment method.")
        _check_usable(method)
        check_minimum(payment_provider(), amount, wallet.currency)
        existing = auto_top_up_lock(wallet.id)
        auto = existing or AutoTopUp(wallet=wallet, payment_method=method)
        if existing is None or auto.payment_method_id != method.id:
            auto.payment_method = method
            auto.consecutive_failures = 0
            auto.last_failure_code = auto.last_failure_message = ""
            auto.next_attempt_at = None
        elif gives_up(auto.consecutive_failures):
            auto.consecutive_failures = 0  # stopped after refusals: setting it again starts afresh
        auto.threshold, auto.amount = threshold, amount
        if wallet.available < threshold:
            auto.due_at = auto.due_at or now
            auto.next_attempt_at = auto.next_attempt_at or now
        else:
            auto.due_at = None
        auto.save(force_insert=existing is None)
        if wallet.auto_top_up_below != threshold:
            wallet.auto_top_up_below = threshold
            wallet.save(update_fields=["auto_top_up_below", "updated_at"])
        return auto


def _check_usable(method: PaymentMethod) -> None:
    if method.status != PaymentMethod.Status.ACTIVE:
        raise PaymentMethodNotUsable(
            f"This payment method is {method.status}: only an active one can be charged. "
            + (
                "Complete its setup first (the client_secret from POST /api/v1/payment-methods/)."
                if method.status == PaymentMethod.Status.PENDING
                else "Save a card again with POST /api/v1/payment-methods/."
            )
        )
    provider = payment_provider().name
    if method.provider != provider:
        raise PaymentMethodNotUsable(
            f"This payment method was saved with the {method.provider} provider; payments now go "
            f"through {provider}. Save the card again."
        )


def auto_top_up_delete(*, wallet_id: uuid.UUID, owner_id: int) -> None:
    """Stop the wallet's automatic top-ups (NotFound when it has none, or is another
    customer's). A top-up already in flight is not stopped: it is a payment under way,
    credited if it succeeds."""
    with transaction.atomic():
        wallet = wallet_lock(wallet_id, owner_id=owner_id)
        auto = auto_top_up_lock(wallet.id)
        if auto is None:
            raise NotFound("This wallet has no automatic top-up.")
        auto.delete()
        wallet.auto_top_up_below = None
        wallet.save(update_fields=["auto_top_up_below", "updated_at"])


# --- What Billing's other writes tell it --------------------------------------------------------------


def auto_top_up_mark_due(*, wallet_id: uuid.UUID) -> bool:
    """The handler of AutoTopUpDue: the wallet's automatic top-up is wanted. One UPDATE
    of its row (inside the outbox delivery's transaction; it never calls the provider),
    idempotent: a row due already keeps its time, and a waiting attempt (a backoff after a
    refusal) keeps waiting. True when it made the row due."""
    now = timezone.now()
    marked = AutoTopUp.objects.filter(pk=wallet_id, due_at__isnull=True).update(
        due_at=now, next_attempt_at=Coalesce("next_attempt_at", Value(now)), updated_at=now
    )
    return bool(marked)


def after_credit(wallet: Wallet, top_up: TopUp) -> None:
    """An automatic top-up was credited (by the runner, or by the provider's webhook later),
    in the crediting transaction, under the wallet's lock (then the top-up's, then the
    row's): the failures are over, and the top-up is no longer due, unless the wallet is
    still below its threshold (a debt took part of the credit, spending went on): then it
    is due again, now."""
    now = timezone.now()
    still_below = wallet.auto_top_up_below is not None and wallet.available < wallet.auto_top_up_below
    AutoTopUp.objects.filter(pk=wallet.pk).update(
        consecutive_failures=0,
        last_failure_code="",
        last_failure_message="",
        due_at=now if still_below else None,
        next_attempt_at=now if still_below else None,
        updated_at=now,
    )


def after_failure(top_up: TopUp) -> None:
    """An automatic top-up failed (the runner failed it after a refusal, or the provider
    cancelled it), in the failing transaction, under the top-up's lock: one more failure
    in a row, with the provider's words, and the next attempt waits (``RETRY_DELAYS``,
    the daily cap). Runs once per top-up: failing a failed top-up does nothing. A
    failure of a card the wallet no longer uses counts for nothing."""
    auto = auto_top_up_lock(top_up.wallet_id)
    if auto is None or auto.payment_method_id != top_up.payment_method_id:
        return
    now = timezone.now()
    auto.consecutive_failures += 1
    auto.last_failure_code = (top_up.failure_code or "failed")[:60]
    auto.last_failure_message = top_up.failure_message[:255]
    if gives_up(auto.consecutive_failures):
        # Stopped until the owner sets it again (PUT) or chooses another card: a card
        # that keeps failing is not tried, and its owner not emailed, day after day.
        auto.due_at = auto.next_attempt_at = None
    else:
        auto.next_attempt_at = next_attempt_after_failure(
            wallet_id=auto.wallet_id, failures=auto.consecutive_failures, now=now
        )
    auto.save(
        update_fields=[
            "consecutive_failures",
            "last_failure_code",
            "last_failure_message",
            "due_at",
            "next_attempt_at",
            "updated_at",
        ]
    )


def gives_up(failures: int) -> bool:
    """Whether ``failures`` refusals in a row stop the automatic top-ups."""
    return failures >= settings.IAAS_AUTO_TOP_UP_GIVE_UP_AFTER


def retry_delay(failures: int) -> dt.timedelta:
    """How long the next attempt waits after ``failures`` refusals in a row."""
    return RETRY_DELAYS[min(max(failures, 1), len(RETRY_DELAYS)) - 1]


def cap_lifts_at(*, wallet_id: uuid.UUID, now: dt.datetime) -> dt.datetime | None:
    """When the wallet may start another automatic top-up under the daily cap: None when
    it may now, else when the oldest attempt of the last 24 hours leaves the window."""
    started = list(
        TopUp.objects.filter(wallet_id=wallet_id, origin=TopUp.Origin.AUTO, created_at__gt=now - CAP_WINDOW)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    if len(started) < settings.IAAS_AUTO_TOP_UP_DAILY_ATTEMPTS:
        return None
    return started[len(started) - settings.IAAS_AUTO_TOP_UP_DAILY_ATTEMPTS] + CAP_WINDOW


def next_attempt_after_failure(*, wallet_id: uuid.UUID, failures: int, now: dt.datetime) -> dt.datetime:
    """The backoff after ``failures`` refusals in a row, or later when the daily cap says so."""
    backoff = now + retry_delay(failures)
    lifts = cap_lifts_at(wallet_id=wallet_id, now=now)
    return max(backoff, lifts) if lifts is not None else backoff


# --- The runner ------------------------------------------------------------------------------------------

# What a run reports: the rows it claimed, and what became of each.
RUN_SUMMARY = (
    "claimed",
    "credited",
    "refused",
    "waiting",
    "not_needed",
    "capped",
    "unusable",
    "unavailable",
    "errors",
)


@dataclass(frozen=True)
class Attempt:
    """What the locked decision said: a top-up to charge (opened now, or resumed), or why
    there is none (``outcome``)."""

    outcome: str
    top_up: TopUp | None = None
    method: PaymentMethod | None = None


def auto_top_ups_run(*, now: dt.datetime | None = None, limit: int = CLAIM_BATCH) -> dict[str, int]:
    """Charge the due automatic top-ups whose time has come: claim up to ``limit`` rows no
    other runner holds (one short transaction), then attempt each in transactions of its
    own (``auto_top_up_attempt``). Safe in several processes at once. Returns how many
    rows it claimed and what became of them."""
    now = now or timezone.now()
    until = now + CLAIM_LEASE
    with transaction.atomic():
        claimed = auto_top_ups_claim(now=now, until=until, limit=limit)
    summary = dict.fromkeys(RUN_SUMMARY, 0)
    summary["claimed"] = len(claimed)
    for wallet_id in claimed:
        try:
            outcome = auto_top_up_attempt(wallet_id=wallet_id, now=now, claimed_until=until)
        except Exception:  # one wallet's surprise must not stop the others'
            logger.exception("automatic top-up of wallet %s failed unexpectedly", wallet_id)
            _release(wallet_id, claimed_until=until, next_attempt_at=timezone.now() + ERROR_DELAY)
            outcome = "errors"
        summary[outcome] = summary.get(outcome, 0) + 1
    return summary


def auto_top_up_attempt(
    *, wallet_id: uuid.UUID, now: dt.datetime | None = None, claimed_until: dt.datetime | None = None
) -> str:
    """One wallet's automatic top-up: decide under its lock (``_attempt_decide``), then,
    outside any transaction, charge the saved card and record what the provider said.
    Returns what became of it: credited, refused, waiting (the provider is processing),
    unavailable (the provider could not be reached: nothing failed, tried again shortly),
    or why nothing was charged (not_needed, capped, unusable)."""
    now = now or timezone.now()
    attempt = _attempt_decide(wallet_id, now=now, claimed_until=claimed_until)
    if attempt.top_up is None:
        return attempt.outcome
    top_up, method = attempt.top_up, attempt.method
    provider = payment_provider()
    try:
        outcome = provider.charge_saved(top_up, method)
    except PaymentProviderUnavailable:
        _release(
            wallet_id,
            claimed_until=claimed_until,
            next_attempt_at=timezone.now() + PROVIDER_UNAVAILABLE_DELAY,
        )
        return "unavailable"
    recorded = services.top_up_record_outcome(top_up_id=top_up.id, outcome=outcome)
    if recorded.status == TopUp.Status.SUCCEEDED:
        _release(wallet_id, claimed_until=claimed_until)
        return "credited"
    if recorded.status == TopUp.Status.FAILED:  # the provider's cancellation came first
        _release(wallet_id, claimed_until=claimed_until)
        return "refused"
    if outcome.refused or outcome.failure_code:
        _refused(provider, recorded, outcome)
        _release(wallet_id, claimed_until=claimed_until)
        return "refused"
    _release(wallet_id, claimed_until=claimed_until, next_attempt_at=timezone.now() + WAIT_FOR_PROVIDER)
    return "waiting"


def _attempt_decide(wallet_id: uuid.UUID, *, now: dt.datetime, claimed_until: dt.datetime | None) -> Attempt:
    """Under the wallet's lock (then its auto top-up row's), one short transaction: is a
    top-up still wanted, and may one start? An automatic top-up already pending (a runner
    died after opening it, or its payment is still processing) is resumed, never doubled:
    the provider's idempotency key is its id. Otherwise, when the wallet is active, still
    below its threshold and under the daily cap, a pending top-up is committed here; the
    partial unique constraint on pending automatic top-ups is the database's word that
    there is one in flight at most."""
    with transaction.atomic():
        wallet = wallet_lock(wallet_id)
        auto = auto_top_up_lock(wallet_id)
        if auto is None or (claimed_until is not None and auto.claimed_until != claimed_until):
            return Attempt("not_needed")  # deleted meanwhile, or our claim expired and another has it
        if auto.due_at is None:  # a credit came first
            _release_locked(auto)
            return Attempt("not_needed")
        if wallet.status == Wallet.Status.FROZEN:
            # Still wanted once the wallet is unfrozen (nothing re-arms it then): look again later.
            auto.next_attempt_at = now + FROZEN_RECHECK
            _release_locked(auto, "next_attempt_at")
            return Attempt("not_needed")
        if wallet.status != Wallet.Status.ACTIVE:
            auto.due_at = None
            _release_locked(auto, "due_at")
            return Attempt("not_needed")
        pending = (
            TopUp.objects.filter(wallet=wallet, origin=TopUp.Origin.AUTO, status=TopUp.Status.PENDING)
            .select_related("payment_method")
            .first()
        )
        if pending is not None:
            if pending.provider_reference or _still_chargeable(pending, auto):
                auto.last_attempt_at = now
                auto.save(update_fields=["last_attempt_at", "updated_at"])
                return Attempt("resumed", pending, pending.payment_method)
            # Never sent to the provider, and its card was removed or replaced since: it is
            # not charged (not the removed card, not another one under its key); it fails,
            # and the wallet's current card is tried below.
            services.top_up_fail(
                top_up_id=pending.id,
                reason="Nothing was charged: the saved card was removed or replaced "
                "before the payment started.",
            )
        if wallet.available >= auto.threshold:
            auto.due_at = None
            _release_locked(auto, "due_at")
            return Attempt("not_needed")
        method = auto.payment_method
        try:
            _check_usable(method)
        except PaymentMethodNotUsable as unusable:
            auto.due_at = None
            auto.last_failure_code = "payment_method_unusable"
            auto.last_failure_message = str(unusable)[:255]
            _release_locked(auto, "due_at", "last_failure_code", "last_failure_message")
            return Attempt("unusable")
        lifts = cap_lifts_at(wallet_id=wallet_id, now=now)
        if lifts is not None:
            auto.next_attempt_at = lifts
            _release_locked(auto, "next_attempt_at")
            return Attempt("capped")
        top_up = services.top_up_open(
            wallet_id=wallet_id,
            owner_id=wallet.owner_id,
            amount=auto.amount,
            origin=TopUp.Origin.AUTO,
            payment_method_id=method.id,
            reference=f"auto:{wallet_id}:{uuid.uuid4()}",
        )
        auto.last_attempt_at = now
        auto.save(update_fields=["last_attempt_at", "updated_at"])
        return Attempt("opened", top_up, method)


def _still_chargeable(pending: TopUp, auto: AutoTopUp) -> bool:
    """Whether a pending automatic top-up not yet sent to the provider may be charged now:
    its card is still the auto top-up's, and still saved."""
    method = pending.payment_method
    return (
        method is not None
        and method.id == auto.payment_method_id
        and method.status == PaymentMethod.Status.ACTIVE
    )


def _refused(provider, top_up: TopUp, outcome: PaymentOutcome) -> None:
    """The provider refused the charge: the top-up fails (``services.top_up_fail``: its owner
    is told why and what to do, and ``after_failure`` schedules the next attempt), then the
    provider's payment is cancelled, best effort (Stripe keeps a refused PaymentIntent
    open; its cancellation webhook finds the top-up failed already)."""
    auto = AutoTopUp.objects.filter(pk=top_up.wallet_id).first()
    failures = (auto.consecutive_failures if auto is not None else 0) + 1
    next_attempt = (
        None
        if gives_up(failures)
        else next_attempt_after_failure(wallet_id=top_up.wallet_id, failures=failures, now=timezone.now())
    )
    services.top_up_fail(top_up_id=top_up.id, reason=failure_reason(outcome, next_attempt=next_attempt))
    cancel = getattr(provider, "cancel", None)
    reference = outcome.provider_reference or top_up.provider_reference
    if cancel is not None and reference:
        try:
            cancel(reference)
        except PaymentProviderUnavailable:
            logger.warning(
                "refused automatic top-up %s: its payment %s is not cancelled", top_up.id, reference
            )


def failure_reason(outcome: PaymentOutcome, *, next_attempt: dt.datetime | None) -> str:
    """What the customer reads (the top-up's failure webhook and email): what happened to
    the automatic top-up, what to do about it, and when it is tried again (None: it is not,
    after too many refusals in a row, until the customer sets it up again)."""
    when = (
        f"Automatic top-ups will try again after {next_attempt:%Y-%m-%d %H:%M} UTC."
        if next_attempt is not None
        else f"Automatic top-ups have stopped after {settings.IAAS_AUTO_TOP_UP_GIVE_UP_AFTER} refusals "
        "in a row: choose a card again (PUT /api/v1/wallets/{id}/auto-top-up/) to start them again."
    )
    code = outcome.failure_code
    if code == "authentication_required":
        return (
            "Your card asked for authentication (3-D Secure), which an automatic top-up cannot "
            "give while you are away, so your wallet was not topped up. Top up once by hand with "
            f"this card, or save a card that does not ask for it. {when}"
        )
    if code == "expired_card":
        return (
            "Your card has expired, so your wallet was not topped up. Save a new card and choose "
            f"it for automatic top-ups. {when}"
        )
    if code == "insufficient_funds":
        return (
            "Your card was declined for insufficient funds, so your wallet was not topped up. "
            f"Top up by hand, or choose another card for automatic top-ups. {when}"
        )
    said = f" ({outcome.failure_message.rstrip('.')})" if outcome.failure_message else ""
    return (
        f"Your card was declined{said}, so your wallet was not topped up. Check the card with "
        f"your bank, or save another one and choose it for automatic top-ups. {when}"
    )


def _release(
    wallet_id: uuid.UUID,
    *,
    claimed_until: dt.datetime | None = None,
    next_attempt_at: dt.datetime | None = None,
) -> None:
    """Let go of the runner's claim on the row (one UPDATE, no other field touched: the
    row's due time and failures are the crediting and failing transactions' to write),
    and, given one, set when it is tried next. With ``claimed_until``, only while the
    claim is still this runner's: one whose lease ran out leaves another's claim alone."""
    fields: dict = {"claimed_until": None}
    if next_attempt_at is not None:
        fields["next_attempt_at"] = next_attempt_at
    rows = AutoTopUp.objects.filter(pk=wallet_id)
    if claimed_until is not None:
        rows = rows.filter(claimed_until=claimed_until)
    rows.update(**fields)


def _release_locked(auto: AutoTopUp, *fields: str) -> None:
    auto.claimed_until = None
    auto.save(update_fields=["claimed_until", "updated_at", *fields])
