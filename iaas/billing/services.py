"""Billing's writes. Every function that moves money locks the wallet row first
(through ``locks.wallet_lock``), then a hold; never the other way round. The writes
under those locks are made of ``ledger``'s basics; the reads are in ``selectors``."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from iaas.audit.services import object_type, record_change
from iaas.contracts import bus, statements
from iaas.contracts.errors import (
    AdjustmentRefused,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidState,
    NotFound,
    RefundRefused,
    WalletExists,
    WalletNotActive,
    WalletNotFound,
)
from iaas.contracts.events import ChargeSettled, FundsReserved, ReleaseRequested

from . import batch, notices, reversals, selectors
from .ledger import (
    charges_applied,
    entry_book,
    entry_next,
    hold_grow_write,
    hold_shrink,
    reservation_applied,
    reservation_record,
    wallet_money_save,
)
from .locks import Reserved, top_up_lock, wallet_lock, wallet_reserve_if_available, wallets_lock
from .models import Adjustment, LedgerEntry, Refund, Reservation, SettledCharge, TopUp, Wallet
from .payments import PaymentOutcome, auto, check_minimum, payment_provider

logger = logging.getLogger(__name__)

# --- Wallets ---------------------------------------------------------------------------


def wallet_create(*, owner_id: int, currency: str) -> Wallet:
    if currency not in settings.IAAS_SUPPORTED_CURRENCIES:
        raise ValueError(f"unsupported currency {currency!r}")
    try:
        with transaction.atomic():
            return Wallet.objects.create(owner_id=owner_id, currency=currency)
    except IntegrityError:
        if Wallet.objects.filter(owner_id=owner_id, currency=currency).exists():
            raise WalletExists() from None
        raise


# What the history calls a move to each status.
STATUS_ACTIONS = {
    Wallet.Status.FROZEN: "freeze",
    Wallet.Status.ACTIVE: "unfreeze",
    Wallet.Status.CLOSED: "close",
}


def wallet_set_status(
    *, wallet_id: uuid.UUID, status: str, actor_id: int | None = None, reason: str = ""
) -> Wallet:
    """Freeze, unfreeze or close a wallet. Freezing or closing asks the selling contexts
    to give their allowance back (they stay the source of truth for releases). A move to
    another status is recorded in the wallet's history with ``actor_id`` (the operator,
    None for a run) and ``reason``, in the same transaction."""
    with transaction.atomic():
        wallet = wallet_lock(wallet_id)
        if wallet.status == Wallet.Status.CLOSED:
            raise InvalidState("A closed wallet stays closed.")
        previous = wallet.status
        wallet.status = status
        wallet.save(update_fields=["status", "updated_at"])
        if previous != status:
            record_change(
                obj_type=object_type(wallet),
                obj_id=wallet.pk,
                action=STATUS_ACTIONS.get(status, "change_status"),
                before={"status": previous},
                after={"status": status},
                actor_id=actor_id,
                reason=reason,
            )
        if status != Wallet.Status.ACTIVE:
            _publish_release_request(wallet, requested_by="billing")
        return wallet


def wallet_low_balance_threshold_set(*, wallet_id: uuid.UUID, owner_id: int, threshold: int | None) -> Wallet:
    """The owner's low-balance alert: LowBalanceReached each time the available balance
    drops from at or above ``threshold`` (minor units, 0 to the top-up limit) to below it;
    None turns it off. Another customer's wallet is WalletNotFound, like a missing one.

    Setting a threshold tells nothing, even one the wallet is below already: only money
    moving across it does (a purchase, a debit). Otherwise switching the threshold back
    and forth would send an alert, with its webhooks and email, per request. Under the
    wallet lock, so a reserve running at the same time sees the old threshold or the new
    one, never half of the change."""
    if threshold is not None and (
        type(threshold) is not int or not 0 <= threshold <= settings.IAAS_MAX_TOP_UP
    ):
        raise ValueError(f"a low-balance threshold is 0 to {settings.IAAS_MAX_TOP_UP} minor units, or None")
    with transaction.atomic():
        wallet = wallet_lock(wallet_id, owner_id=owner_id)
        if wallet.low_balance_threshold == threshold:
            return wallet
        wallet.low_balance_threshold = threshold
        wallet.save(update_fields=["low_balance_threshold", "updated_at"])
        return wallet


# --- Reservations (the contract's synchronous side) ------------------------------------


def funds_reserve(
    *, wallet_id: uuid.UUID, owner_id: int, context: str, currency: str, amount: int, minimum: int
) -> Reservation:
    """Grant ``context`` up to ``amount`` and at least ``minimum`` out of the wallet's
    unreserved balance, in the caller's transaction, under the wallet lock (I2).

    On PostgreSQL two statements: one conditional UPDATE locks, checks and reserves
    (``wallet_reserve_if_available``); one more grows the hold and records the
    reservation and its FundsReserved event. Elsewhere, and when that UPDATE changes
    nothing (the refusal's reason is read under the lock), the wallet is locked and
    checked in Python first.

    A grant that takes the available balance below the owner's low-balance threshold
    publishes LowBalanceReached too, and below the auto top-up threshold AutoTopUpDue, at
    no statement's cost: the UPDATE returns the wallet, and their outbox rows go in
    FundsReserved's INSERT."""
    if not 0 < minimum <= amount:
        raise ValueError("reserve needs 0 < minimum <= amount")
    with transaction.atomic(savepoint=False):
        reserved = None
        if statements.folding():
            reserved = wallet_reserve_if_available(
                wallet_id, owner_id=owner_id, currency=currency, amount=amount, minimum=minimum
            )
        if reserved is None:
            reserved = _reserve_checked_in_python(
                wallet_id,
                owner_id=owner_id,
                context=context,
                currency=currency,
                amount=amount,
                minimum=minimum,
            )
        granted = reserved.granted
        reservation = Reservation(
            wallet_id=wallet_id, context=context, kind=Reservation.Kind.GRANT, amount=granted
        )
        bus.publish(
            FundsReserved(
                reservation_id=reservation.id,
                wallet_id=wallet_id,
                context=context,
                amount=granted,
                currency=currency,
            ),
            *notices.balance_alerts(reserved.wallet, available_before=reserved.available_before),
            together=[
                hold_grow_write(wallet_id=wallet_id, context=context, amount=granted),
                statements.insert(reservation),
            ],
        )
        return statements.saved(reservation)


def _reserve_checked_in_python(
    wallet_id: uuid.UUID, *, owner_id: int, context: str, currency: str, amount: int, minimum: int
) -> Reserved:
    """Lock the wallet, say why it cannot grant (a refusal), or add the grant to
    ``reserved``: the portable path, and the reason for a refused conditional UPDATE."""
    wallet = wallet_lock(wallet_id, owner_id=owner_id)
    if wallet.currency != currency:
        raise CurrencyMismatch()
    if wallet.status != Wallet.Status.ACTIVE:
        raise WalletNotActive()
    if wallet.available < minimum:
        raise _refusal(wallet, context)
    available_before = wallet.available
    granted = min(amount, available_before)
    wallet.reserved += granted
    wallet_money_save(wallet)
    return Reserved(granted=granted, wallet=wallet, available_before=available_before)


def _refusal(wallet: Wallet, context: str) -> InsufficientFunds:
    """The refusal. When other contexts hold funds for the wallet, it carries a release
    request to publish once the refused purchase has rolled back (publishing it here
    would roll back with the purchase)."""
    others_hold = selectors.holds_elsewhere(wallet_id=wallet.id, context=context)
    error = InsufficientFunds(release_requested=others_hold)
    if others_hold:
        error.after_rollback.append(partial(release_request, wallet_id=wallet.id, requested_by=context))
    return error


def _publish_release_request(wallet: Wallet, *, requested_by: str) -> bool:
    if not selectors.holds_elsewhere(wallet_id=wallet.id, context=requested_by):
        return False
    bus.publish(ReleaseRequested(wallet_id=wallet.id, requested_by=requested_by))
    return True


def release_request(*, wallet_id: uuid.UUID, requested_by: str) -> bool:
    with transaction.atomic():
        try:
            wallet = Wallet.objects.get(pk=wallet_id)
        except Wallet.DoesNotExist:
            return False
        return _publish_release_request(wallet, requested_by=requested_by)


# --- Settlement and release (event handlers' work) -------------------------------------


@dataclass(frozen=True)
class ChargeToSettle:
    """One charge a selling context recorded (what ChargesRecorded lists)."""

    charge_id: uuid.UUID
    amount: int
    transaction_date: dt.datetime
    description: str
    subject_id: uuid.UUID | None = None
    period_start: dt.datetime | None = None
    period_end: dt.datetime | None = None


@dataclass(frozen=True)
class ChargesToSettle:
    """One event's charges: one wallet, one context, one currency."""

    event_id: uuid.UUID
    wallet_id: uuid.UUID
    context: str
    currency: str
    charges: tuple[ChargeToSettle, ...]


@dataclass
class Settlement:
    """What ``charges_settle`` booked: one ledger entry per wallet and context (their
    charges are ``entry.charges``), and the events it left for later (wallet busy)."""

    entries: list[LedgerEntry] = field(default_factory=list)
    deferred: set[uuid.UUID] = field(default_factory=set)


def _entry_description(context: str, charges: list[ChargeToSettle]) -> str:
    if len(charges) == 1:
        return charges[0].description
    return f"{context.capitalize()}: {len(charges)} charges"


def _entry_date(charges: list[ChargeToSettle]) -> dt.datetime:
    """A single charge's own date; for several, the latest end of their periods (the
    moment the last of them was used), or their latest date when none has a period."""
    if len(charges) == 1:
        return charges[0].transaction_date
    ends = [charge.period_end for charge in charges if charge.period_end is not None]
    return max(ends) if ends else max(charge.transaction_date for charge in charges)


def charges_settle(*, settlements: list[ChargesToSettle], skip_locked: bool = False) -> Settlement:
    """Book the selling contexts' charges of many wallets in one transaction, with a
    number of statements that does not grow with the batch (ARCHITECTURE.md, protocol
    step 3 and batches):

    1. lock the wallets in id order, FOR NO KEY UPDATE; with ``skip_locked`` a wallet
       another transaction holds is left out and its events come back in ``deferred``
       (the delivery worker retries them a moment later), else it is waited for;
    2. drop the charges Billing has applied already (one query on SettledCharge's key:
       I5, a redelivered event books nothing) and repeats within the batch;
    3. per wallet and context one charge entry for the total, its sequence and
       balance_after assigned here under the wallet lock (I9); balance and reserved
       drop by the total, the context's hold shrinks by it (a capture), one capture
       record per entry, one SettledCharge per charge mapping it to its entry;
    4. publish ChargeSettled per entry, so the context records the entry on its charges.

    No savepoint of its own: the event bus runs each handler in one already. A charge in
    another currency than its wallet's fails the whole call (the bus then settles the
    batch's events one by one, so only that event fails)."""
    with transaction.atomic(savepoint=False):
        wanted = {settlement.wallet_id for settlement in settlements}
        wallets = wallets_lock(wanted, skip_locked=skip_locked)
        missing = wanted - wallets.keys()
        if missing and (not skip_locked or selectors.wallets_existing(missing) != missing):
            raise WalletNotFound()
        result = Settlement(deferred={s.event_id for s in settlements if s.wallet_id in missing})
        todo = [s for s in settlements if s.wallet_id in wallets]
        for settlement in todo:
            currency = wallets[settlement.wallet_id].currency
            if settlement.currency != currency:
                raise CurrencyMismatch(
                    f"charges of event {settlement.event_id} are in {settlement.currency}, "
                    f"wallet {settlement.wallet_id} in {currency}"
                )
        seen = charges_applied([c.charge_id for s in todo for c in s.charges])
        grouped: dict[tuple[uuid.UUID, str], list[ChargeToSettle]] = defaultdict(list)
        for settlement in todo:
            for charge in settlement.charges:
                if charge.charge_id not in seen:
                    seen.add(charge.charge_id)
                    grouped[(settlement.wallet_id, settlement.context)].append(charge)
        if not grouped:
            return result
        settled: list[tuple[LedgerEntry, list[ChargeToSettle]]] = []
        for wallet_id, context in sorted(grouped, key=lambda key: (str(key[0]), key[1])):
            charges = grouped[(wallet_id, context)]
            wallet = wallets[wallet_id]
            total = sum(charge.amount for charge in charges)
            first = charges[0].charge_id
            entry = entry_next(
                wallet,
                kind=LedgerEntry.Kind.CHARGE,
                amount=-total,
                reference=f"charges:{first}",
                description=_entry_description(context, charges),
                transaction_date=_entry_date(charges),
                context=context,
                source_id=first,
            )
            wallet.reserved -= total
            settled.append((entry, charges))
        booked = sorted({entry.wallet_id for entry, _ in settled}, key=str)
        batch.settlement_book(wallets=[wallets[w] for w in booked], settled=settled)
        bus.publish(
            *(
                ChargeSettled(
                    wallet_id=entry.wallet_id,
                    context=entry.context,
                    ledger_entry_id=entry.id,
                    charge_ids=tuple(charge.charge_id for charge in charges),
                )
                for entry, charges in settled
            )
        )
        result.entries = [entry for entry, _ in settled]
        return result


def charge_settle(
    *,
    charge_id: uuid.UUID,
    wallet_id: uuid.UUID,
    context: str,
    amount: int,
    currency: str,
    transaction_date: dt.datetime,
    description: str,
) -> LedgerEntry | None:
    """Book one context's charge (see charges_settle). None when already settled."""
    charge = ChargeToSettle(charge_id, amount, transaction_date, description)
    settlement = ChargesToSettle(uuid.uuid4(), wallet_id, context, currency, (charge,))
    entries = charges_settle(settlements=[settlement]).entries
    return entries[0] if entries else None


def allowance_release_apply(
    *, release_id: uuid.UUID, wallet_id: uuid.UUID, context: str, amount: int
) -> Reservation | None:
    """A context gave allowance back: reserved and the hold shrink. Applied once (I5).
    No savepoint of its own: the event bus runs each handler in one already."""
    with transaction.atomic(savepoint=False):
        wallet = wallet_lock(wallet_id)
        if reservation_applied(kind=Reservation.Kind.RELEASE, source_id=release_id):
            return None
        wallet.reserved -= amount
        wallet_money_save(wallet)
        hold_shrink(wallet_id=wallet.id, context=context, amount=amount, kind=Reservation.Kind.RELEASE)
        return reservation_record(
            wallet=wallet,
            context=context,
            kind=Reservation.Kind.RELEASE,
            amount=amount,
            source_id=release_id,
        )


# --- Top-ups -----------------------------------------------------------------------------


def top_up_open(
    *,
    wallet_id: uuid.UUID,
    owner_id: int,
    amount: int,
    reference: str | None = None,
    origin: str = TopUp.Origin.CUSTOMER,
    payment_method_id: uuid.UUID | None = None,
) -> TopUp:
    """Commit a pending top-up, before any provider is asked for the money (ARCHITECTURE.md,
    "Money coming in"). The same ``reference`` on the same wallet is the same top-up:
    returned, never a second one. A frozen wallet in debt may be topped up (the money pays
    the debt first); any other wallet that is not active may not."""
    if type(amount) is not int or amount <= 0 or amount > settings.IAAS_MAX_TOP_UP:
        raise ValueError(f"a top-up is 1 to {settings.IAAS_MAX_TOP_UP} minor units")
    provider = payment_provider()
    reference = reference or f"top-up:{uuid.uuid4()}"
    with transaction.atomic():
        try:
            wallet = Wallet.objects.get(pk=wallet_id, owner_id=owner_id)
        except Wallet.DoesNotExist:
            raise WalletNotFound() from None
        if not (
            wallet.status == Wallet.Status.ACTIVE or (wallet.status == Wallet.Status.FROZEN and wallet.debt)
        ):
            raise WalletNotActive()
        check_minimum(provider, amount, wallet.currency)
        existing = TopUp.objects.filter(wallet=wallet, reference=reference).first()
        if existing is not None:
            return existing
        try:
            with transaction.atomic():
                return TopUp.objects.create(
                    wallet=wallet,
                    amount=amount,
                    currency=wallet.currency,
                    reference=reference,
                    provider=provider.name,
                    origin=origin,
                    payment_method_id=payment_method_id,
                )
        except IntegrityError:
            # The same reference committed by a concurrent request: that is this top-up.
            return TopUp.objects.get(wallet=wallet, reference=reference)


@dataclass(frozen=True)
class TopUpStarted:
    """A top-up after its provider was asked for the money, and what the customer's
    browser needs to complete it (a card provider's ``client_secret``; None otherwise)."""

    top_up: TopUp
    client_secret: str | None = None


def top_up_start(*, top_up_id: uuid.UUID) -> TopUpStarted:
    """Ask the top-up's provider for the money, outside any transaction, then record what
    it said: its reference, and the credit when the money is there already. Safe to call
    again for the same top-up (a retried request, reconcile): the provider's idempotency
    key is the top-up's, so it is one payment. A top-up no longer pending is answered as
    it is."""
    top_up = TopUp.objects.select_related("payment_method").get(pk=top_up_id)
    if top_up.status != TopUp.Status.PENDING:
        return TopUpStarted(top_up)
    provider = payment_provider_for(top_up)
    if top_up.origin == TopUp.Origin.AUTO:
        # The same call the auto top-up runner made (the same parameters under the same key).
        outcome = provider.charge_saved(top_up, top_up.payment_method)
    else:
        outcome = provider.start(top_up)
    return TopUpStarted(top_up_record_outcome(top_up_id=top_up.id, outcome=outcome), outcome.client_secret)


def payment_provider_for(top_up: TopUp):
    """The provider a top-up was opened with (an operator may switch providers while
    top-ups are pending): the configured one when it has that name."""
    provider = payment_provider()
    if provider.name != top_up.provider:
        raise InvalidState(f"This top-up belongs to the {top_up.provider} provider, not {provider.name}.")
    return provider


def top_up_record_outcome(*, top_up_id: uuid.UUID, outcome: PaymentOutcome) -> TopUp:
    """Record what the provider said of a top-up's payment: its reference (once), the
    credit when it succeeded, the refused attempt when it was refused (the top-up stays
    pending: the provider says when it is cancelled)."""
    if outcome.succeeded:
        return top_up_confirm(top_up_id=top_up_id, provider_reference=outcome.provider_reference)
    with transaction.atomic():
        top_up = top_up_lock(top_up_id)
        fields = _reference_fields(top_up, outcome.provider_reference)
        if outcome.refused and top_up.status == TopUp.Status.PENDING:
            top_up.failed_attempts += 1
            top_up.failure_code = outcome.failure_code[:60]
            top_up.failure_message = outcome.failure_message[:255]
            fields += ["failed_attempts", "failure_code", "failure_message"]
        if fields:
            top_up.save(update_fields=fields)
        return top_up


def _reference_fields(top_up: TopUp, provider_reference: str) -> list[str]:
    """Set the provider's reference on a locked top-up when it has none yet."""
    if provider_reference and not top_up.provider_reference:
        top_up.provider_reference = provider_reference
        return ["provider_reference"]
    return []


def top_up_create(*, wallet_id: uuid.UUID, owner_id: int, amount: int, reference: str | None = None) -> TopUp:
    """Open a top-up and start it through the configured provider (``top_up_open``, then
    ``top_up_start``). The sandbox provider succeeds at once: the wallet is credited
    before this returns."""
    top_up = top_up_open(wallet_id=wallet_id, owner_id=owner_id, amount=amount, reference=reference)
    return top_up_start(top_up_id=top_up.id).top_up


def top_up_confirm(*, top_up_id: uuid.UUID, provider_reference: str = "") -> TopUp:
    """The provider says the money arrived: credit the wallet, once, whenever it arrives
    and whatever came before (a top-up failed by an operator or a cancellation is
    credited too: the money is there). What the wallet owes after a payment reversal is
    paid first, by a reversal-kind entry beside the whole credit."""
    with transaction.atomic():
        wallet_id = TopUp.objects.values_list("wallet_id", flat=True).get(pk=top_up_id)
        wallet = wallet_lock(wallet_id)
        top_up = top_up_lock(top_up_id)
        if top_up.status == TopUp.Status.SUCCEEDED:
            return top_up
        if top_up.status == TopUp.Status.FAILED:
            logger.warning("top-up %s succeeded at the provider after it had failed: credited", top_up.id)
        entry = entry_book(
            wallet,
            kind=LedgerEntry.Kind.TOP_UP,
            amount=top_up.amount,
            reference=f"top-up:{top_up.id}",
            description=f"Top-up via {top_up.provider}",
            transaction_date=top_up.created_at,
            source_id=top_up.id,
        )
        fields = ["status", "completed_at", "ledger_entry", *_reference_fields(top_up, provider_reference)]
        top_up.status = TopUp.Status.SUCCEEDED
        top_up.completed_at = timezone.now()
        top_up.ledger_entry = entry
        if paid := reversals.debt_pay(wallet, top_up):
            top_up.debt_paid = paid
            fields.append("debt_paid")
        top_up.save(update_fields=fields)
        bus.publish(notices.wallet_topped_up(top_up, owner_id=wallet.owner_id))
        if top_up.origin == TopUp.Origin.AUTO:
            auto.after_credit(wallet, top_up)
        return top_up


# Providers whose payments only the provider can confirm: an operator's "the money
# arrived" would credit money the card network may never deliver.
PROVIDER_CONFIRMED = frozenset({"stripe"})


def top_up_confirm_by_operator(*, top_up_id: uuid.UUID) -> TopUp:
    """An operator says the money arrived (a bank transfer seen on the account): credit
    it, once. Refused for a card top-up, which its provider confirms (webhook, or
    ``finish_top_ups`` asking it)."""
    provider = TopUp.objects.values_list("provider", flat=True).get(pk=top_up_id)
    if provider in PROVIDER_CONFIRMED:
        raise InvalidState(
            f"A {provider} top-up is credited when {provider} says the payment succeeded, not by hand; "
            "`manage.py finish_top_ups` asks it about pending ones."
        )
    return top_up_confirm(top_up_id=top_up_id)


def top_up_fail_by_operator(*, top_up_id: uuid.UUID, reason: str = "rejected") -> TopUp:
    """An operator says the money will not arrive. Refused for a card payment the provider
    holds (it may still succeed, and would then be credited anyway): cancel it at the
    provider, whose cancellation fails the top-up (or ``finish_top_ups`` expires it)."""
    provider, reference = TopUp.objects.values_list("provider", "provider_reference").get(pk=top_up_id)
    if provider in PROVIDER_CONFIRMED and reference:
        raise InvalidState(
            f"This top-up's payment {reference} is open at {provider}: cancel it there; its "
            "cancellation fails the top-up."
        )
    return top_up_fail(top_up_id=top_up_id, reason=reason)


def top_up_fail(*, top_up_id: uuid.UUID, reason: str = "") -> TopUp:
    """The money will not arrive (the provider cancelled or expired the payment, or an
    operator says so): the top-up ends ``failed``, crediting nothing, and its owner is
    told (TopUpFailed, with ``reason``) in the same transaction. Failing a failed top-up
    again changes and tells nothing."""
    with transaction.atomic():
        top_up = top_up_lock(top_up_id)
        if top_up.status == TopUp.Status.SUCCEEDED:
            raise InvalidState("A succeeded top-up cannot fail; refund it instead.")
        if top_up.status == TopUp.Status.FAILED:
            return top_up
        top_up.status = TopUp.Status.FAILED
        top_up.completed_at = timezone.now()
        top_up.save(update_fields=["status", "completed_at"])
        owner_id = Wallet.objects.values_list("owner_id", flat=True).get(pk=top_up.wallet_id)
        bus.publish(notices.top_up_failed(top_up, owner_id=owner_id, reason=reason))
        if top_up.origin == TopUp.Origin.AUTO:
            auto.after_failure(top_up)
        return top_up


# --- Operator adjustments -----------------------------------------------------------------


class AlreadyBooked(InvalidState):
    """The operation's id (an operator form's one-time token) was booked before: a
    second submission of the same form. Nothing was booked again; ``booked`` is the
    first booking."""

    code = "already_booked"
    default_detail = "This was booked already; nothing was booked again."

    def __init__(self, booked: Adjustment | Refund) -> None:
        self.booked = booked
        super().__init__()


def _already_booked(model: type[Adjustment] | type[Refund], operation_id: uuid.UUID | None) -> None:
    booked = model.objects.filter(pk=operation_id).first() if operation_id is not None else None
    if booked is not None:
        raise AlreadyBooked(booked)


def wallet_adjust(
    *,
    wallet_id: uuid.UUID,
    amount: int,
    reason: str,
    operator_id: int,
    adjustment_id: uuid.UUID | None = None,
) -> Adjustment:
    """An operator's credit (amount > 0) or debit (amount < 0), with a required reason.
    A debit takes unreserved money only: it never eats into what the services hold;
    when held money is in the way, the refusal asks the contexts for their idle
    allowance back (after the rollback, as a refused purchase does), so a retry can
    succeed.

    ``adjustment_id`` (an admin form's one-time token) makes it idempotent: the ledger
    reference ``adjustment:<id>`` and the adjustment's key are unique, and a second
    call with the same id raises AlreadyBooked and books nothing."""
    reason = (reason or "").strip()
    if not reason:
        raise AdjustmentRefused("An adjustment needs a reason.")
    if type(amount) is not int or amount == 0:
        raise AdjustmentRefused("An adjustment is a non-zero whole number of minor units.")
    adjustment_id = adjustment_id or uuid.uuid4()
    try:
        with transaction.atomic():
            wallet = wallet_lock(wallet_id)
            # Under the wallet lock: a second submission racing the first waits for it.
            _already_booked(Adjustment, adjustment_id)
            if amount < 0 and -amount > wallet.available:
                raise _debit_refusal(wallet, -amount)
            available_before = wallet.available
            entry = entry_book(
                wallet,
                kind=LedgerEntry.Kind.ADJUSTMENT,
                amount=amount,
                reference=f"adjustment:{adjustment_id}",
                description=f"Adjustment: {reason}",
                source_id=adjustment_id,
                created_by_id=operator_id,
            )
            if amount < 0:
                _publish_release_request(wallet, requested_by="billing")
                if alerts := notices.balance_alerts(wallet, available_before=available_before):
                    bus.publish(*alerts)
            return Adjustment.objects.create(
                id=adjustment_id,
                wallet=wallet,
                amount=amount,
                reason=reason,
                created_by_id=operator_id,
                ledger_entry=entry,
            )
    except IntegrityError:
        # The backstop: the same id booked on another wallet (whose lock we did not wait
        # for) conflicts on the unique key; that is a second submission too.
        _already_booked(Adjustment, adjustment_id)
        raise


def _debit_refusal(wallet: Wallet, amount: int) -> AdjustmentRefused:
    """A debit the available balance does not cover. When money the services hold is
    in the way (the balance would cover it), the refusal carries a release request to
    publish once the refused debit has rolled back."""
    release = amount <= wallet.balance and selectors.holds_elsewhere(wallet_id=wallet.id, context="billing")
    error = AdjustmentRefused(
        f"A debit of {wallet.money(amount)} exceeds the available "
        f"{wallet.money(wallet.available)} (balance {wallet.money(wallet.balance)}, "
        f"reserved {wallet.money(wallet.reserved)})."
        + (
            " The services are being asked to release the funds they hold idle; "
            "retry in a few seconds and the debit may succeed."
            if release
            else ""
        )
    )
    if release:
        error.after_rollback.append(partial(release_request, wallet_id=wallet.id, requested_by="billing"))
    return error


# --- Refunds ------------------------------------------------------------------------------------


def charge_refund(
    *,
    charge_id: uuid.UUID,
    reason: str,
    operator_id: int,
    amount: int | None = None,
    refund_id: uuid.UUID | None = None,
) -> Refund:
    """Give back a settled charge's money (all of it when ``amount`` is None): a refund
    entry credits the wallet. At most once per charge and at most its amount: one charge,
    never a whole ledger entry, which may settle many (ARCHITECTURE.md).

    ``refund_id`` (an admin form's one-time token) makes a second submission of the
    same form raise AlreadyBooked rather than "refunded already"."""
    reason = (reason or "").strip()
    if not reason:
        raise RefundRefused("A refund needs a reason.")
    if amount is not None and (type(amount) is not int or amount <= 0):
        raise RefundRefused("A refund is a positive whole number of minor units.")
    with transaction.atomic():
        wallet_id = SettledCharge.objects.filter(pk=charge_id).values_list("wallet_id", flat=True).first()
        if wallet_id is None:
            raise NotFound("No such settled charge.")
        wallet = wallet_lock(wallet_id)
        _already_booked(Refund, refund_id)
        charge = SettledCharge.objects.select_related("ledger_entry").get(pk=charge_id)
        if Refund.objects.filter(charge=charge).exists():
            raise RefundRefused("This charge has been refunded already.")
        amount = charge.amount if amount is None else amount
        if amount > charge.amount:
            raise RefundRefused(
                f"A refund of {wallet.money(amount)} exceeds the charge of {wallet.money(charge.amount)}."
            )
        refund_id = refund_id or uuid.uuid4()
        entry = entry_book(
            wallet,
            kind=LedgerEntry.Kind.REFUND,
            amount=amount,
            reference=f"refund:{charge.charge_id}",
            description=f"Refund of {charge.description} (#{charge.ledger_entry.sequence}): {reason}",
            context=charge.context,
            source_id=refund_id,
            created_by_id=operator_id,
        )
        refund = Refund.objects.create(
            id=refund_id,
            wallet=wallet,
            charge=charge,
            amount=amount,
            reason=reason,
            created_by_id=operator_id,
            ledger_entry=entry,
        )
        bus.publish(notices.charge_refunded(refund))
        return refund
