"""Every row lock the spending protocol takes, for any selling context, in one place, so
the lock order can be read here (ARCHITECTURE.md): the service row (metered services'
helpers below; the others' in their context's locks.py);
then the context's allowance row (waiting for a purchase, SKIP LOCKED for a batch or an
idle release); then, inside Billing, the wallet and the hold. A settlement batch locks
only usage records, SKIP LOCKED. Each helper runs inside the caller's transaction and
takes the context's model: the protocol is written once for every context."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.db import connection
from django.db.models import DateField, Model, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import TruncMonth
from django.utils import timezone

from iaas.contracts.errors import NotFound
from iaas.contracts.types import Money

from .batch import Partition, in_partition
from .models import AbstractAllowance, AbstractUsage

# --- allowance rows -----------------------------------------------------------------------


def quote(name: str) -> str:
    return connection.ops.quote_name(name)


def allowance_lock(
    allowance_model: type[AbstractAllowance], wallet_id: uuid.UUID
) -> AbstractAllowance | None:
    """Lock the context's allowance row for the wallet, waiting for it (FOR NO KEY
    UPDATE). None when the wallet has no row here yet (``allowance_create_and_lock``)."""
    return allowance_model.objects.select_for_update(no_key=True).filter(pk=wallet_id).first()


def allowance_create_and_lock(allowance: AbstractAllowance) -> AbstractAllowance:
    """Create a wallet's first allowance row in a context (INSERT ... ON CONFLICT DO
    NOTHING: a concurrent first purchase may create it first, and then its row stands),
    then lock the row, waiting for it (FOR NO KEY UPDATE)."""
    model = type(allowance)
    model.objects.bulk_create([allowance], ignore_conflicts=True)
    return model.objects.select_for_update(no_key=True).get(pk=allowance.wallet_id)


@dataclass(frozen=True, slots=True)
class AllowanceToSpend:
    """What a spend checks and needs of its allowance row, read under the row's lock."""

    owner_id: int
    currency: str
    blocked: bool
    amount: int

    @classmethod
    def of(cls, allowance: AbstractAllowance) -> AllowanceToSpend:
        return cls(allowance.owner_id, allowance.currency, allowance.blocked, allowance.amount)


def allowance_lock_to_spend(
    allowance_model: type[AbstractAllowance], wallet_id: uuid.UUID
) -> AllowanceToSpend | None:
    """Lock the context's allowance row for the wallet, waiting for it (FOR NO KEY
    UPDATE), reading only what a spend checks (owner, currency, block) and the amount
    held: one statement, written in SQL (a purchase runs it every time; the ORM's query
    building cost more than the query). None when the wallet has no row here yet."""
    meta = allowance_model._meta
    key = meta.pk.get_db_prep_value(wallet_id, connection)
    lock = (
        f" {connection.ops.for_update_sql(no_key=True)}" if connection.features.has_select_for_update else ""
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT owner_id, currency, blocked, amount FROM {quote(meta.db_table)} "  # noqa: S608
            f"WHERE wallet_id = %s{lock}",
            [key],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    owner_id, currency, blocked, amount = row
    return AllowanceToSpend(owner_id, currency, bool(blocked), amount)


def allowance_spend(
    allowance_model: type[AbstractAllowance],
    wallet_id: uuid.UUID,
    *,
    granted: int,
    price: int,
    now: dt.datetime,
) -> None:
    """Add a grant to the locked allowance row and deduct a price from it (the totals
    with them): one UPDATE. The row's CHECKs refuse an allowance going negative."""
    meta = allowance_model._meta
    table = quote(meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET amount = amount + %s, granted_total = granted_total + %s, "  # noqa: S608
            f"charged_total = charged_total + %s, last_used_at = %s WHERE wallet_id = %s",
            [
                granted - price,
                granted,
                price,
                meta.get_field("last_used_at").get_db_prep_value(now, connection),
                meta.pk.get_db_prep_value(wallet_id, connection),
            ],
        )


def allowances_try_lock(
    allowance_model: type[AbstractAllowance], wallet_ids
) -> dict[uuid.UUID, AbstractAllowance]:
    """A batch's allowance rows, locked in wallet order, FOR NO KEY UPDATE SKIP LOCKED, in
    one statement: a row a purchase or another worker holds, or a missing one, is absent
    from the answer."""
    rows = allowance_model.objects.select_for_update(no_key=True, skip_locked=True)
    return {a.wallet_id: a for a in rows.filter(pk__in=sorted(wallet_ids)).order_by("wallet_id")}


def idle_allowance_try_lock(
    allowance_model: type[AbstractAllowance], wallet_id: uuid.UUID, *, unused_since: dt.datetime
) -> AbstractAllowance | None:
    """Lock the wallet's allowance row if it holds money unused since ``unused_since``,
    FOR NO KEY UPDATE SKIP LOCKED: a purchase holding the row is using it, so it is not
    idle. None when it is busy, empty or used since."""
    return (
        allowance_model.objects.select_for_update(no_key=True, skip_locked=True)
        .filter(pk=wallet_id, amount__gt=0, last_used_at__lt=unused_since)
        .first()
    )


def allowance_deduct_if_covered(
    allowance_model: type[AbstractAllowance], *, wallet_id: uuid.UUID, owner_id: int, price: Money
) -> bool:
    """The frequent spender's fast path: one conditional UPDATE that locks the wallet's
    allowance row (waiting for it, like FOR NO KEY UPDATE) and deducts the price only
    when the row is this owner's, in the price's currency, not blocked, and covers the
    price. False when no row changed (no row, or a check failed): the caller takes the
    full path, which locks the row and says why. Written in SQL: a purchase inside the
    allowance runs it every time, and the ORM's update building cost more than the
    update."""
    meta = allowance_model._meta
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET amount = amount - %s, "  # noqa: S608
            f"charged_total = charged_total + %s, last_used_at = %s "
            f"WHERE wallet_id = %s AND owner_id = %s AND currency = %s AND NOT blocked AND amount >= %s",
            [
                price.amount,
                price.amount,
                meta.get_field("last_used_at").get_db_prep_value(timezone.now(), connection),
                meta.pk.get_db_prep_value(wallet_id, connection),
                owner_id,
                price.currency,
                price.amount,
            ],
        )
        return cursor.rowcount == 1


# --- usage records (settlement) -------------------------------------------------------------

# What a settlement batch reads of each usage record it locks (plain rows, no model
# instances: a batch holds thousands).
DUE_FIELDS = (
    "id",
    "wallet_id",
    "owner_id",
    "currency",
    "service_id",
    "hours",
    "closed_hours",
    "amount",
    "closed_amount",
    "closed_until",
    "accrued_until",
)


def usage_due_try_lock(
    usage_model: type[AbstractUsage],
    *,
    now: dt.datetime,
    partition: Partition,
    after: tuple[uuid.UUID, int] | None,
    limit: int,
) -> list:
    """The partition's next ``limit`` usage records due for closing at ``now``, after the
    keyset ``after`` (wallet id, record id), locked in (wallet, record) order, FOR NO KEY
    UPDATE SKIP LOCKED: one statement. A record metering holds is skipped. Rows with the
    fields of DUE_FIELDS as attributes."""
    rows = usage_model.objects.filter(close_due_at__lte=now, wallet_id__gte=partition.low)
    if partition.high is not None:
        rows = rows.filter(wallet_id__lt=partition.high)
    if after is not None:  # the range condition starts the index scan at the keyset
        rows = rows.filter(wallet_id__gte=after[0]).filter(
            Q(wallet_id__gt=after[0]) | Q(wallet_id=after[0], id__gt=after[1])
        )
    rows = rows.select_for_update(no_key=True, skip_locked=True).order_by("wallet_id", "id")
    return list(rows.values_list(*DUE_FIELDS, named=True)[:limit])


# --- metered services (servers, volumes) ------------------------------------------------


def service_lock(service_model: type[Model], service_id: uuid.UUID, *, owner_id: int | None = None):
    """Lock a metered service's row, waiting for it (FOR NO KEY UPDATE); ``owner_id``: the
    customer's own only. NotFound otherwise."""
    rows = service_model.objects.select_for_update(no_key=True)
    if owner_id is not None:
        rows = rows.filter(owner_id=owner_id)
    try:
        return rows.get(pk=service_id)
    except service_model.DoesNotExist:
        raise NotFound(f"No such {service_model._meta.verbose_name}.") from None


def service_try_lock(service_model: type[Model], service_id: uuid.UUID, *, terms: dict):
    """Lock a metered service unless another transaction holds it (a concurrent metering
    run, a customer ending it): None then, and the caller moves on. ``terms``: what its
    rate is read from (its plan's columns), read in the same statement."""
    return (
        service_model.objects.select_for_update(no_key=True, skip_locked=True, of=("self",))
        .annotate(**terms)
        .filter(pk=service_id)
        .first()
    )


def services_to_meter(
    service_model: type[Model], *, now: dt.datetime, partition: Partition, after: tuple | None = None
) -> QuerySet:
    """Services a metering run at ``now`` looks at in the partition, after the keyset
    ``after`` (wallet id, service id), in (wallet, service) order: active ones with a
    started hour unpaid, and suspended ones for causes a batch lifts (never an
    operator's hold), retried every run."""
    due = Q(status="active", paid_until__lt=now) | Q(status="suspended", operator_hold_since=None)
    return in_partition(service_model.objects.filter(due), partition=partition, after=after)


def services_to_meter_try_lock(
    service_model: type[Model],
    usage_model: type[AbstractUsage],
    *,
    terms: dict,
    now: dt.datetime,
    partition: Partition,
    after: tuple | None,
    limit: int,
) -> list:
    """The next ``limit`` services due in the partition, locked in (wallet, service) order,
    FOR NO KEY UPDATE SKIP LOCKED, with their rate's ``terms`` and what the usage record
    of the month of their next unpaid hour holds (``usage_amount``...: None without a
    record): one statement. A service a purchase or another worker holds is skipped, and
    picked up by the run's last pass."""
    rows = services_to_meter(service_model, now=now, partition=partition, after=after)
    rows = rows.select_for_update(no_key=True, skip_locked=True, of=("self",))
    return list(rows.annotate(**terms).annotate(**_month_usage(usage_model))[:limit])


def _month_usage(usage_model: type[AbstractUsage]) -> dict:
    """The usage record of the month the service's next unpaid hour starts in (project
    time zone): the only month at or after it that can have a record yet (every hour
    accrued so far started before paid_until)."""
    month = {"usage_month": TruncMonth("paid_until", output_field=DateField())}
    record = usage_model.objects.filter(service_id=OuterRef("pk"), month=OuterRef("usage_month"))
    held = {
        f"usage_{name}": Subquery(record.values(name)[:1])
        for name in ("amount", "refunded", "cap", "list_exact")
    }
    return {**month, **held}


# --- sold services about to end (the warning before, iaas.spending.ending) -----------------


def services_ending_try_lock(
    service_model: type[Model],
    *,
    unpaid_since_by: dt.datetime,
    after: uuid.UUID | None,
    limit: int,
    shown=lambda rows: rows,
) -> list:
    """The next ``limit`` services, after the id ``after``, suspended for ``unpaid``
    alone since ``unpaid_since_by`` or earlier and not yet warned of their end, locked in
    id order, FOR NO KEY UPDATE SKIP LOCKED: one statement. A service a batch or a
    customer holds is skipped, and warned by the next run. ``shown``: what the warning
    shows of each, read in the same statement (``SoldServices.with_shown_data``)."""
    rows = service_model.objects.filter(
        status="suspended",
        unpaid_since__lte=unpaid_since_by,
        wallet_blocked_since=None,
        operator_hold_since=None,
        end_warned_at=None,
    )
    if after is not None:
        rows = rows.filter(pk__gt=after)
    rows = rows.select_for_update(no_key=True, skip_locked=True, of=("self",)).order_by("pk")
    return list(shown(rows)[:limit])
