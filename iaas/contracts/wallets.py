"""The one way a wallet's status changes (freeze, unfreeze, close): a hook that the
composition root (iaas.operations) binds at start-up, so Billing's admin and payment
handlers reach it without importing the selling contexts. Freezing blocks every selling
context's allowance for the wallet first, then Billing locks the wallet and sets its
status, in one transaction, in the lock order (allowances before the wallet)."""

from __future__ import annotations

import uuid
from typing import Protocol

from .binding import Slot


class WalletStatusChange(Protocol):
    def __call__(
        self, *, wallet_id: uuid.UUID, status: str, actor_id: int | None = None, reason: str = ""
    ) -> object: ...


_slot: Slot[WalletStatusChange] = Slot("wallet status")
bind = _slot.bind


def change_status(
    *, wallet_id: uuid.UUID, status: str, actor_id: int | None = None, reason: str = ""
) -> object:
    """Freeze (``frozen``), close (``closed``) or unfreeze (``active``) a wallet, recording
    who (``actor_id``; None for the system) and why; returns Billing's wallet. Raises
    InvalidState for a closed wallet."""
    return _slot.get()(wallet_id=wallet_id, status=status, actor_id=actor_id, reason=reason)
