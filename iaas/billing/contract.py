"""Billing's implementation of ``iaas.contracts.billing``: models in, DTOs out."""

from __future__ import annotations

import uuid

from iaas.contracts.billing import Grant, HoldTotals, MoneyInReport, ReserveRequest, WalletView
from iaas.contracts.checks import Relation, Violation
from iaas.contracts.errors import DomainError, WalletNotFound

from . import batch, checks, selectors, services

HOLD_TOTALS = """
SELECT wallet_id, context, granted_total AS granted, captured_total AS captured,
       released_total AS released, amount AS outstanding
FROM billing_hold
"""


class BillingContractImpl:
    def reserve(
        self,
        *,
        wallet_id: uuid.UUID,
        owner_id: int,
        context: str,
        currency: str,
        amount: int,
        minimum: int,
    ) -> Grant:
        reservation = services.funds_reserve(
            wallet_id=wallet_id,
            owner_id=owner_id,
            context=context,
            currency=currency,
            amount=amount,
            minimum=minimum,
        )
        return Grant(
            reservation_id=reservation.id,
            wallet_id=wallet_id,
            context=context,
            amount=reservation.amount,
            currency=currency,
        )

    def reserve_batch(
        self, *, context: str, requests: list[ReserveRequest]
    ) -> dict[uuid.UUID, Grant | DomainError]:
        return batch.funds_reserve_batch(context=context, requests=requests)

    def wallet_view(self, *, wallet_id: uuid.UUID, owner_id: int | None = None) -> WalletView:
        row = selectors.wallet_summary(wallet_id=wallet_id, owner_id=owner_id)
        if row is None:
            raise WalletNotFound()
        return WalletView(**row)

    def request_release(self, *, wallet_id: uuid.UUID, requested_by: str) -> bool:
        return services.release_request(wallet_id=wallet_id, requested_by=requested_by)

    def hold_totals(self) -> list[HoldTotals]:
        return [
            HoldTotals(
                wallet_id=row["wallet_id"],
                context=row["context"],
                granted=row["granted_total"],
                captured=row["captured_total"],
                released=row["released_total"],
                outstanding=row["amount"],
            )
            for row in selectors.hold_totals()
        ]

    def hold_totals_relation(self) -> Relation:
        return Relation(HOLD_TOTALS)

    def check_invariants(self, *, deep: bool = False) -> dict[str, list[Violation]]:
        return checks.check_all(deep=deep)

    def money_in_report(self) -> MoneyInReport:
        return checks.money_in_report()
