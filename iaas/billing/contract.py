"""Billing's implementation of ``iaas.contracts.billing``: models in, DTOs out."""

from __future__ import annotations

import uuid

from django.db.models import Q, Sum

from iaas.contracts.billing import Grant, HoldTotals, WalletView
from iaas.contracts.checks import Violation
from iaas.contracts.errors import WalletNotFound

from . import checks, services
from .models import Hold, Reservation, Wallet


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

    def wallet_view(self, *, wallet_id: uuid.UUID, owner_id: int | None = None) -> WalletView:
        rows = Wallet.objects.filter(pk=wallet_id)
        if owner_id is not None:
            rows = rows.filter(owner_id=owner_id)
        row = rows.values("id", "owner_id", "currency", "status").first()
        if row is None:
            raise WalletNotFound()
        return WalletView(**row)

    def request_release(self, *, wallet_id: uuid.UUID, requested_by: str) -> bool:
        return services.release_request(wallet_id=wallet_id, requested_by=requested_by)

    def hold_totals(self) -> list[HoldTotals]:
        sums = {
            (row["wallet_id"], row["context"]): row
            for row in Reservation.objects.values("wallet_id", "context").annotate(
                granted=Sum("amount", filter=Q(kind=Reservation.Kind.GRANT), default=0),
                captured=Sum("amount", filter=Q(kind=Reservation.Kind.CAPTURE), default=0),
                released=Sum("amount", filter=Q(kind=Reservation.Kind.RELEASE), default=0),
            )
        }
        holds = Hold.objects.values_list("wallet_id", "context", "amount")
        keys = set(sums) | {(w, c) for w, c, _ in holds}
        outstanding = {(w, c): a for w, c, a in holds}
        return [
            HoldTotals(
                wallet_id=wallet_id,
                context=context,
                granted=sums.get((wallet_id, context), {}).get("granted", 0),
                captured=sums.get((wallet_id, context), {}).get("captured", 0),
                released=sums.get((wallet_id, context), {}).get("released", 0),
                outstanding=outstanding.get((wallet_id, context), 0),
            )
            for wallet_id, context in sorted(keys, key=str)
        ]

    def check_invariants(self) -> dict[str, list[Violation]]:
        return {name: check() for name, check in checks.CHECKS.items()}
