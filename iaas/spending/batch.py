"""What every selling context's batch runs share (ARCHITECTURE.md, "Batches"): the
partition of wallets a worker walks, the batch transaction's own short lock timeout,
and paying a whole batch's wallets out of the context's allowances at once.

A batch claims whole wallets: partition ``p`` of ``n`` is the wallets whose id falls in
the ``p``-th of ``n`` equal ranges of the UUID space. Wallet ids are random (UUID v4),
so their leading bits are the hash: the ranges split the wallets evenly, the same key
routes a wallet's work to one worker (or queue), and a worker walks its partition with
a keyset over the wallet-id index, never OFFSET.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.utils import timezone

from iaas.common import sql
from iaas.contracts import billing
from iaas.contracts.billing import ReserveRequest
from iaas.contracts.errors import CurrencyMismatch, DomainError, WalletNotActive, WalletNotFound

from .models import AbstractAllowance

UUID_SPACE = 1 << 128


@dataclass(frozen=True, slots=True)
class Partition:
    """The ``index``-th of ``count`` equal ranges of wallet ids: [low, high)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition {self.index} of {self.count} does not exist")

    @classmethod
    def parse(cls, text: str) -> Partition:
        """``"2/8"``: the third of eight partitions (numbered from 0)."""
        index, _, count = text.partition("/")
        return cls(int(index), int(count))

    @property
    def low(self) -> uuid.UUID:
        return uuid.UUID(int=self.index * UUID_SPACE // self.count)

    @property
    def high(self) -> uuid.UUID | None:
        """The first wallet id past the range; None for the last partition."""
        if self.index == self.count - 1:
            return None
        return uuid.UUID(int=(self.index + 1) * UUID_SPACE // self.count)

    def of(self, wallet_id: uuid.UUID) -> bool:
        return self.index == wallet_id.int * self.count // UUID_SPACE

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def partition_of(wallet_id: uuid.UUID, count: int) -> int:
    """Which of ``count`` partitions a wallet's work belongs to (the routing key)."""
    return wallet_id.int * count // UUID_SPACE


def start_batch_transaction() -> None:
    """Give the batch transaction a short lock_timeout of its own: it skips what is
    locked, and whatever it must wait for (a hold row, an index entry), it waits for
    briefly, so a purchase behind it waits for one short batch at most."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true)", [f"{settings.IAAS_BATCH_LOCK_TIMEOUT_MS}ms"]
            )


@dataclass(slots=True)
class WalletBill:
    """What a batch owes on one wallet (the sum of its services' accruals)."""

    wallet_id: uuid.UUID
    owner_id: int
    currency: str
    total: int = 0


@dataclass(slots=True)
class BatchPayment:
    """How a batch's wallets came out: paid (their services' accruals commit), refused
    (their services take the refusal's cause), deferred (locked elsewhere: untouched,
    left to the run's last pass)."""

    paid: set[uuid.UUID] = field(default_factory=set)
    refused: dict[uuid.UUID, DomainError] = field(default_factory=dict)
    deferred: set[uuid.UUID] = field(default_factory=set)
    granted: int = 0  # reserved from Billing for the batch, in all


def pay_wallets(
    allowance_model: type[AbstractAllowance],
    context: str,
    bills: dict[uuid.UUID, WalletBill],
    allowances: dict[uuid.UUID, AbstractAllowance],
    *,
    refused: dict[uuid.UUID, DomainError] | None = None,
    chunk: int = 0,
) -> BatchPayment:
    """Pay each wallet's bill out of its allowance (``allowances``: the rows the batch
    locked), reserving the shortfalls from Billing in one batch reservation, then debit
    the allowances with one UPDATE. Every spend checks the allowance's owner, currency
    and block first, as a single purchase does. A wallet is paid or refused whole;
    ``refused``: wallets already refused (no allowance Billing would create)."""
    outcome = BatchPayment(refused=dict(refused or {}))
    requests = []
    for wallet_id, bill in bills.items():
        allowance = allowances.get(wallet_id)
        if wallet_id in outcome.refused:
            continue
        if allowance is None:
            outcome.deferred.add(wallet_id)
            continue
        if bill.total == 0:
            outcome.paid.add(wallet_id)  # capped hours cost nothing: no spend, no check
            continue
        refusal = _spend_refusal(allowance, bill)
        if refusal is not None:
            outcome.refused[wallet_id] = refusal
            continue
        shortfall = bill.total - allowance.amount
        if shortfall > 0:
            requests.append(
                ReserveRequest(wallet_id, bill.owner_id, bill.currency, max(shortfall, chunk), shortfall)
            )
        else:
            outcome.paid.add(wallet_id)
    grants = {}
    if requests:
        answers = billing.reserve_batch(context=context, requests=requests)
        for request in requests:
            answer = answers.get(request.wallet_id)
            if answer is None:
                outcome.deferred.add(request.wallet_id)
            elif isinstance(answer, DomainError):
                outcome.refused[request.wallet_id] = answer
            else:
                grants[request.wallet_id] = answer.amount
                outcome.paid.add(request.wallet_id)
    outcome.granted = sum(grants.values())
    _debit_allowances(
        allowance_model,
        [
            (w, grants.get(w, 0), bills[w].total)
            for w in sorted(outcome.paid)
            if bills[w].total or grants.get(w)
        ],
    )
    return outcome


def _spend_refusal(allowance: AbstractAllowance, bill: WalletBill) -> DomainError | None:
    if allowance.owner_id != bill.owner_id:
        return WalletNotFound()
    if allowance.blocked:
        return WalletNotActive()
    if allowance.currency != bill.currency:
        return CurrencyMismatch(f"The price is in {bill.currency}, the wallet holds {allowance.currency}.")
    return None


def _debit_allowances(
    allowance_model: type[AbstractAllowance], rows: list[tuple[uuid.UUID, int, int]]
) -> None:
    """Add each wallet's grant to its allowance and take its bill out: one UPDATE. The
    allowance CHECKs (never negative, totals add up) hold the arithmetic."""
    field_ = allowance_model._meta.get_field
    relation = sql.rows(
        "spent",
        [("wallet_id", field_("wallet_id")), ("granted", field_("amount")), ("charged", field_("amount"))],
        rows,
    )
    table = sql.table(allowance_model)
    sql.execute(
        f"UPDATE {table} SET amount = {table}.amount + spent.granted - spent.charged, "  # noqa: S608
        f"granted_total = {table}.granted_total + spent.granted, "
        f"charged_total = {table}.charged_total + spent.charged, last_used_at = %s "
        f"FROM spent WHERE {table}.wallet_id = spent.wallet_id",
        relation,
        [timezone.now()],
    )
