"""Billing's event handlers: plain functions of the event, idempotent by its business id."""

from __future__ import annotations

from iaas.contracts.events import AllowanceReleased, ChargeRecorded, ChargesRecorded

from . import services


def _charge(event: ChargeRecorded) -> services.ChargeToSettle:
    return services.ChargeToSettle(
        charge_id=event.charge_id,
        context=event.context,
        amount=event.amount,
        currency=event.currency,
        transaction_date=event.transaction_date,
        description=event.description,
    )


def settle_charge(event: ChargeRecorded) -> None:
    services.charges_settle(wallet_id=event.wallet_id, charges=[_charge(event)])


def settle_charges(events: list[ChargeRecorded]) -> None:
    """Batch form for the delivery worker: one wallet's pending charges, one transaction."""
    wallet_ids = {event.wallet_id for event in events}
    if len(wallet_ids) != 1:
        raise ValueError("a settlement batch is one wallet's charges")
    services.charges_settle(wallet_id=wallet_ids.pop(), charges=[_charge(e) for e in events])


def _recorded(event: ChargesRecorded) -> list[services.ChargeToSettle]:
    return [
        services.ChargeToSettle(
            charge_id=c.charge_id,
            context=event.context,
            amount=c.amount,
            currency=event.currency,
            transaction_date=c.transaction_date,
            description=c.description,
        )
        for c in event.charges
    ]


def settle_recorded_charges(event: ChargesRecorded) -> None:
    services.charges_settle(wallet_id=event.wallet_id, charges=_recorded(event))


def settle_many_recorded_charges(events: list[ChargesRecorded]) -> set:
    """Batch form: each wallet's events in one go (one transaction, several wallets)."""
    by_wallet: dict = {}
    for event in events:
        by_wallet.setdefault(event.wallet_id, []).extend(_recorded(event))
    for wallet_id in sorted(by_wallet, key=str):
        services.charges_settle(wallet_id=wallet_id, charges=by_wallet[wallet_id])
    return set()


def apply_release(event: AllowanceReleased) -> None:
    services.allowance_release_apply(
        release_id=event.release_id,
        wallet_id=event.wallet_id,
        context=event.context,
        amount=event.amount,
    )
