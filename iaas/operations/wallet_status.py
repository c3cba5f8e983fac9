"""Freezing, unfreezing and closing a wallet, across the contexts, in one transaction.

A frozen wallet stops all spending at once, the allowance reserved before the freeze
included (ARCHITECTURE.md): every selling context first blocks its allowance row for the
wallet (a purchase holding that row finishes first; one that comes after sees the block),
then Billing locks the wallet and sets its status. Unfreezing takes the locks in the same
order. Billing reaches this through ``iaas.contracts.wallets`` (bound at start-up)."""

from __future__ import annotations

import uuid

from iaas.billing import services as billing_services
from iaas.billing.models import Wallet
from iaas.common.db import retry_transaction
from iaas.contracts import selling


@retry_transaction
def wallet_status_change(
    *, wallet_id: uuid.UUID, status: str, actor_id: int | None = None, reason: str = ""
) -> Wallet:
    if status not in Wallet.Status.values:
        raise ValueError(f"unknown wallet status {status!r}")
    blocked = status != Wallet.Status.ACTIVE
    for context in selling.contexts():  # allowance rows first: the lock order
        context.set_allowance_blocked(wallet_id=wallet_id, blocked=blocked)
    return billing_services.wallet_set_status(
        wallet_id=wallet_id, status=status, actor_id=actor_id, reason=reason
    )
