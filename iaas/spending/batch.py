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

import datetime as dt
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from iaas.audit.services import Change, changed_fields, object_type, record_changes
from iaas.common import sql
from iaas.common.cli import run_each
from iaas.common.faults import pause_point
from iaas.contracts import billing, bus
from iaas.contracts.billing import ReserveRequest
from iaas.contracts.errors import CurrencyMismatch, DomainError, WalletNotActive, WalletNotFound
from iaas.contracts.events import Event

from . import lifecycle
from .models import AbstractAllowance, AbstractSuspendable, SuspensionCause

logger = logging.getLogger(__name__)

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


# --- The shape every charging batch shares (metering, renewals) ------------------------------


@dataclass(slots=True)
class Step:
    """What a batch means to do for one locked service: spend ``amount`` (0: nothing to
    pay, e.g. hours under a reached cap) and, once paid, move to the state the context
    computed (``resumes``: a suspended service runs again). ``units``: hours, months."""

    service: AbstractSuspendable
    amount: int
    currency: str
    units: int
    resumes: bool
    detail: object = None  # the context's own (accruals, the new period end)


@dataclass(frozen=True)
class Life:
    """How a context's services say what happened to them (its events, its end state).
    An event shows the service as it is once the batch has written it (iaas.spending.sold):
    the batch builds its events after its writes (``Told``)."""

    suspended: Callable[..., Event]  # (service, reason=, cause=)
    resumed: Callable[..., Event]  # (service)
    ended: Callable[..., Event]  # (service): ended unpaid past grace
    ended_status: str  # "terminated", "cancelled"
    ended_at: str  # the field: "terminated_at", "cancelled_at"
    ended_action: str  # for reports and history: "terminated", "cancelled"
    history_action: str  # "terminate", "cancel"
    actor_label: str  # the run that signs the history: "bill_usage", "renew_subscriptions"


@dataclass(slots=True)
class BatchReport:
    """What one batch (or a whole partition's run) did."""

    items: int = 0
    units: int = 0
    amounts: Counter = field(default_factory=Counter)  # currency -> minor units
    actions: Counter = field(default_factory=Counter)
    granted: int = 0
    charged_wallets: set = field(default_factory=set)
    deferred_wallets: set = field(default_factory=set)
    tried_suspended: set = field(default_factory=set)
    failed_ids: set = field(default_factory=set)  # items whose one-by-one retry failed
    failures: list = field(default_factory=list)  # iaas.common.cli.ItemFailure
    last: tuple | None = None
    exhausted: bool = False  # the partition has nothing due past ``last``
    batches: int = 0

    def add(self, other: BatchReport) -> None:
        self.items += other.items
        self.units += other.units
        self.amounts.update(other.amounts)
        self.actions.update(other.actions)
        self.granted += other.granted
        self.batches += other.batches
        self.charged_wallets |= other.charged_wallets
        self.deferred_wallets |= other.deferred_wallets
        self.tried_suspended |= other.tried_suspended
        self.failed_ids |= other.failed_ids
        self.failures += other.failures


def whole_wallets(services: list, size: int) -> list:
    """A batch claims whole wallets: when the query returned more than ``size`` rows, the
    last wallet may continue past the limit, so it is left to the next batch (unless it
    is the batch's only wallet: a wallet with more services than a batch is charged in
    several, one after the other, by the same worker)."""
    if len(services) <= size:
        return services
    last_wallet = services[size].wallet_id
    whole = [s for s in services[:size] if s.wallet_id != last_wallet]
    return whole or services[:size]


def pay_steps(spender, steps: list[Step]) -> BatchPayment:
    """The batch's bill per wallet, its allowances locked (wallet order, SKIP LOCKED) and
    paid (reserving shortfalls from Billing for the whole batch)."""
    bills: dict[uuid.UUID, WalletBill] = {}
    for step in steps:
        service = step.service
        bill = bills.setdefault(
            service.wallet_id, WalletBill(service.wallet_id, service.owner_id, step.currency)
        )
        bill.total += step.amount
    allowances, unknown = spender.allowances_try_lock({w: b.owner_id for w, b in bills.items()})
    return pay_wallets(
        spender.allowance_model,
        spender.context,
        bills,
        allowances,
        refused=unknown,
        chunk=spender.reserve_ahead_chunk(),
    )


def resume(service: AbstractSuspendable) -> None:
    """Every cause lifted: the service runs again."""
    for cause in service.suspension_causes:
        service.lift_cause(cause)
    service.status = "active"
    service.suspended_at = None


# An event to build once the batch's writes are done: it shows the service as written.
Told = Callable[[], Event]


def refuse(
    service: AbstractSuspendable, refusal: DomainError, *, now: dt.datetime, grace: dt.timedelta, life: Life
) -> tuple[str, Told | None]:
    """Record why the wallet refused on a service: an active one stops (its cause), a
    suspended one keeps or changes its cause, and ends once unpaid alone past grace.
    Returns what happened and the event that tells it (to build after the writes)."""
    was_active = service.status == "active"
    lifecycle.record_refusal(service, refusal, at=now)
    if was_active:
        service.status = "suspended"
        service.suspended_at = now
        cause = service.suspension_causes[0]
        reason = service.operator_reason if cause == SuspensionCause.OPERATOR else cause
        return "suspended", partial(life.suspended, service, reason=reason, cause=cause)
    if lifecycle.is_overdue(service, now=now, grace=grace):
        service.status = life.ended_status
        setattr(service, life.ended_at, now)
        return life.ended_action, partial(life.ended, service)
    return "still_suspended", None


def apply_payment(
    steps: list[Step],
    payment: BatchPayment,
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    life: Life,
    paid: Callable[[Step], None],
    report: BatchReport,
) -> tuple[list, list, list, list]:
    """Walk the batch's steps with the wallets' verdicts: ``paid(step)`` moves a paid
    service on (the context's part: its period, its accruals), a paid suspended one
    resumes, a refused one takes the refusal's cause (or ends). Returns the services
    that only moved on (most of them: the context saves their period alone), those
    whose state changed, the events to publish (``Told``: built once the batch has
    written the services) and the history to record."""
    moved, changed, events, history = [], [], [], []
    for step in steps:
        service = step.service
        wallet_id = service.wallet_id
        report.items += 1
        if wallet_id in payment.deferred:
            report.actions["busy"] += 1
            report.deferred_wallets.add(wallet_id)
            continue
        if service.status == "suspended":  # tried: the run's last pass does not try it again
            report.tried_suspended.add(service.pk)
        if wallet_id in payment.paid:
            before = lifecycle.snapshot(service) if step.resumes else None
            paid(step)
            report.units += step.units
            if step.amount:
                report.amounts[step.currency] += step.amount
            report.charged_wallets.add(wallet_id)
            if step.resumes:
                resume(service)
                events.append(partial(life.resumed, service))
                history.append(_history(service, before, "resume", life=life))
                report.actions["resumed"] += 1
                changed.append(service)
            else:
                report.actions["charged"] += 1
                moved.append(service)
            continue
        before = lifecycle.snapshot(service)
        refusal = payment.refused[wallet_id]
        action, event = refuse(service, refusal, now=now, grace=grace, life=life)
        report.actions[action] += 1
        if event is not None:
            events.append(event)
        if lifecycle.snapshot(service) != before:
            changed.append(service)
            what = {"suspended": "suspend", life.ended_action: life.history_action}.get(
                action, "change_causes"
            )
            history.append(_history(service, before, what, life=life, reason=refusal.code))
    report.granted = payment.granted
    return moved, changed, events, history


def _history(service, before: dict, action: str, *, life: Life, reason: str = "") -> Change:
    old, new = changed_fields(before, lifecycle.snapshot(service))
    return Change(
        obj_type=object_type(service),
        obj_id=service.pk,
        action=action,
        before=old,
        after=new,
        actor_label=life.actor_label,
        reason=reason,
    )


def save_rows(
    model, rows: list, columns: tuple[str, ...], *, returning: str = "", params: tuple = ()
) -> list[tuple]:
    """Every changed row's ``columns`` (the first is the key): one UPDATE. ``returning``:
    what the statement returns of each row it wrote (SQL over the model's table, with
    ``params``), returned; nothing otherwise."""
    field_ = model._meta.get_field
    relation = sql.rows(
        "changed",
        [(name, field_(name)) for name in columns],
        [tuple(getattr(row, name) for name in columns) for row in rows],
    )
    table = sql.table(model)
    key = columns[0]
    assignments = ", ".join(f"{name} = changed.{name}" for name in columns[1:])
    statement = f"UPDATE {table} SET {assignments} FROM changed WHERE {table}.{key} = changed.{key}"  # noqa: S608
    if returning:
        return sql.fetch(f"{statement} RETURNING {returning}", relation, params)
    sql.execute(statement, relation)
    return []


def walk_partition(
    *,
    run_batch: Callable[..., BatchReport],
    one_by_one: Callable[..., BatchReport],
    partition: Partition,
    size: int | None,
    label: str,
) -> BatchReport:
    """A worker's share of a run: its partition walked batch by batch with a keyset
    (``run_batch(after=, size=, skip=)``), then once more from the start for what was
    locked elsewhere the first time (deferred wallets, rows skipped by SKIP LOCKED,
    which no batch can see): only what is still due comes back. Suspended services are
    tried once per run. A batch that fails (a bad row, a bug) rolls back whole and its
    items go through the per-item path one at a time (``one_by_one(after=, size=,
    skip=)``), so one item's failure stops no other; each failure is tried once."""
    size = size or settings.IAAS_BATCH_SIZE
    total = BatchReport()
    for walk in range(2):
        after = None
        if walk:  # what was busy the first time is counted by the last pass only
            total.items -= total.actions["busy"]
            total.actions["busy"] = 0
            total.deferred_wallets = set()
        while True:
            skip = total.tried_suspended | total.failed_ids
            try:
                report = run_batch(after=after, size=size, skip=skip)
            except Exception:
                logger.exception(
                    "%s batch after %s in partition %s failed; one at a time", label, after, partition
                )
                report = one_by_one(after=after, size=size, skip=total.failed_ids)
            report.batches = 1
            total.add(report)
            if report.exhausted or report.last is None:
                break
            after = report.last
    return total


def in_partition(rows: QuerySet, *, partition: Partition, after: tuple | None) -> QuerySet:
    """``rows`` (services with a ``wallet_id``) of the partition, after the keyset
    ``after`` (wallet id, id), in (wallet, id) order: the walk of a batch run."""
    rows = rows.filter(wallet_id__gte=partition.low)
    if partition.high is not None:
        rows = rows.filter(wallet_id__lt=partition.high)
    if after is not None:
        # The plain range condition is what lets the index scan start at the keyset: the
        # OR alone makes PostgreSQL walk the partition from its start at every batch.
        rows = rows.filter(wallet_id__gte=after[0]).filter(
            Q(wallet_id__gt=after[0]) | Q(wallet_id=after[0], pk__gt=after[1])
        )
    return rows.order_by("wallet_id", "pk")


def charging_batch(
    spender,
    *,
    label: str,
    life: Life,
    now: dt.datetime,
    grace: dt.timedelta,
    partition: Partition,
    after: tuple | None,
    size: int,
    skip: set | frozenset,
    lock: Callable[..., list],  # lock(limit=...)
    plan: Callable[[list], list[Step]],
    paid: Callable[[Step], None],
    write: Callable[[list, list], list[Event]],
) -> BatchReport:
    """One batch of a charging run (metering, renewals), one transaction, in the lock
    order: ``lock(limit)`` takes the next due services (in (wallet, id) order, SKIP
    LOCKED), ``plan`` says what each owes, the wallets pay (allowances, then Billing's
    wallets and holds), ``paid(step)`` moves each paid service on, and ``write(moved,
    changed)`` saves the context's rows (the services that only moved on, those whose
    state changed too) (returning events of its own, e.g. ChargesRecorded) and gives the
    changed services what their events show that their rows do not hold; the services'
    events (each showing its service as written) and history follow. ``skip``:
    services this run already tried."""
    report = BatchReport()
    with transaction.atomic():
        start_batch_transaction()
        logger.info("%s batch started: %s partition %s after %s", label, spender.context, partition, after)
        rows = lock(limit=size + 1)
        report.exhausted = len(rows) <= size
        rows = whole_wallets(rows, size)
        if rows:
            report.last = (rows[-1].wallet_id, rows[-1].pk)
        steps = plan([row for row in rows if row.pk not in skip])
        payment = pay_steps(spender, steps)
        moved, changed, told, history = apply_payment(
            steps, payment, now=now, grace=grace, life=life, paid=paid, report=report
        )
        written = write(moved, changed)
        bus.publish(*[tell() for tell in told], *written)
        record_changes(history)
        pause_point(f"{label}_batch")
    logger.info(
        "%s batch committed: %s partition %s, %d item(s)", label, spender.context, partition, report.items
    )
    return report


def one_by_one(
    *,
    keys: list[tuple],
    size: int,
    skip: set,
    work: Callable[[uuid.UUID], object],
    noun: str,
    units: Callable[[object], int],
    action: Callable[[object], str] = lambda outcome: outcome.action,
) -> BatchReport:
    """The items of a batch that failed (``keys``: its (wallet id, id) rows), through
    the per-item path one at a time, so one item's failure stops no other (each is
    reported, and tried once per run)."""
    outcomes, failures = run_each(
        [item_id for _, item_id in keys if item_id not in skip],
        work,
        description=f"{noun}s one by one",
        identify=lambda item_id: (f"{noun} {item_id}", {f"{noun}_id": str(item_id)}),
        logger=logger,
    )
    report = BatchReport(last=keys[-1] if keys else None, exhausted=len(keys) < size, failures=failures)
    for outcome in outcomes:
        report.items += 1
        report.actions[action(outcome)] += 1
        report.units += units(outcome)
        if outcome.amount:
            report.amounts[outcome.currency] += outcome.amount
            report.charged_wallets.add(outcome.wallet_id)
    report.items += len(failures)
    report.failed_ids = {uuid.UUID(failure.facts[f"{noun}_id"]) for failure in failures}
    return report
