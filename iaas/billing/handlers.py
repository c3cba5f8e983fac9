"""Billing's event handlers: plain functions of the event, idempotent by its business id.

Settlement has two forms per event type: the handler (one event, waiting for its wallet)
and the batch form the delivery worker uses with ``--batch-size`` (many wallets' events
in one transaction, busy wallets deferred). Both go through ``services.charges_settle``.
"""

from __future__ import annotations

from iaas.contracts.events import AllowanceReleased, AutoTopUpDue, ChargeRecorded, ChargesRecorded

from . import services
from .payments import auto


def charges_to_settle(event: ChargesRecorded) -> services.ChargesToSettle:
    total = sum(charge.amount for charge in event.charges)
    if total != event.amount:
        # Reconciliation counts ``amount`` as pending until delivery (I4): an event that
        # disagrees with its own charges is a context's bug, to fail loudly, not to book.
        raise ValueError(f"event {event.event_id}: amount {event.amount} but its charges add up to {total}")
    return services.ChargesToSettle(
        event_id=event.event_id,
        wallet_id=event.wallet_id,
        context=event.context,
        currency=event.currency,
        charges=tuple(
            services.ChargeToSettle(
                charge_id=charge.charge_id,
                amount=charge.amount,
                transaction_date=charge.transaction_date,
                description=charge.description,
                subject_id=charge.subject_id,
                period_start=charge.period_start,
                period_end=charge.period_end,
            )
            for charge in event.charges
        ),
    )


def legacy_charge_to_settle(event: ChargeRecorded) -> services.ChargesToSettle:
    """The one-charge event written before aggregate settlement: a list of one."""
    charge = services.ChargeToSettle(
        charge_id=event.charge_id,
        amount=event.amount,
        transaction_date=event.transaction_date,
        description=event.description,
    )
    return services.ChargesToSettle(event.event_id, event.wallet_id, event.context, event.currency, (charge,))


def settle_recorded_charges(event: ChargesRecorded) -> None:
    services.charges_settle(settlements=[charges_to_settle(event)])


def settle_many_recorded_charges(events: list[ChargesRecorded]) -> set:
    """Batch form: many wallets' events in one transaction; returns the ids of the
    events whose wallet another transaction holds (they stay pending)."""
    return services.charges_settle(
        settlements=[charges_to_settle(e) for e in events], skip_locked=True
    ).deferred


def settle_charge(event: ChargeRecorded) -> None:
    services.charges_settle(settlements=[legacy_charge_to_settle(event)])


def settle_charges(events: list[ChargeRecorded]) -> set:
    """Batch form of the legacy event, as ``settle_many_recorded_charges``."""
    return services.charges_settle(
        settlements=[legacy_charge_to_settle(e) for e in events], skip_locked=True
    ).deferred


def apply_release(event: AllowanceReleased) -> None:
    services.allowance_release_apply(
        release_id=event.release_id,
        wallet_id=event.wallet_id,
        context=event.context,
        amount=event.amount,
    )


def mark_auto_top_up_due(event: AutoTopUpDue) -> None:
    """A write took the wallet below its auto top-up threshold: its automatic top-up is
    due (one UPDATE; the runner charges the card later, outside this transaction)."""
    auto.auto_top_up_mark_due(wallet_id=event.wallet_id)
