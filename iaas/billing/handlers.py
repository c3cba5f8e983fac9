"""Billing's event handlers: plain functions of the event, idempotent by its business id."""

from __future__ import annotations

from iaas.contracts.events import AllowanceReleased, ChargeRecorded

from . import services


def settle_charge(event: ChargeRecorded) -> None:
    services.charge_settle(
        charge_id=event.charge_id,
        wallet_id=event.wallet_id,
        context=event.context,
        amount=event.amount,
        currency=event.currency,
        transaction_date=event.transaction_date,
        description=event.description,
    )


def apply_release(event: AllowanceReleased) -> None:
    services.allowance_release_apply(
        release_id=event.release_id,
        wallet_id=event.wallet_id,
        context=event.context,
        amount=event.amount,
    )
