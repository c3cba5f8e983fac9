"""Usage accrues in place: pricing a span of hours under a monthly cap, and writing it
into the service's usage records (one per calendar month) with one upsert, whether for
one service (a resumption) or for a metering batch of thousands.

A started hour is a whole hour and belongs to the month it starts in. Each month's
hours cost their hourly price each until the month's amount reaches the cap (refunded
money does not count towards it); an hour past the cap costs nothing but is still
recorded, so the record's hours always match the hours paid for (I11).

An hourly price need not be whole minor units (a volume's GB-hour is its GB-month price
over 730 hours): it is counted exactly, in 1/divisor minor units (``list_exact``), and
the month's list amount is that rounded once, half up. Each step adds the difference
the rounded total moved by, so the steps add up to the rounded total.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.utils import timezone

from iaas.common import sql
from iaas.common.periods import Month
from iaas.contracts import statements

from .models import AbstractUsage

HOUR = dt.timedelta(hours=1)


def started_hours(start: dt.datetime, until: dt.datetime) -> int:
    """Hours starting at start, start + 1h, ... before ``until``."""
    if until <= start:
        return 0
    return math.ceil((until - start) / HOUR)


def month_of(moment: dt.datetime) -> dt.date:
    """The first day of the calendar month (project time zone) ``moment`` falls in."""
    month = Month.containing(moment)
    return dt.date(month.year, month.month, 1)


def _month_span(moment: dt.datetime, tz: dt.tzinfo) -> tuple[dt.date, dt.datetime]:
    """The first day of ``moment``'s month in ``tz`` and the instant the month ends (as
    Month.containing(...).end, without looking the time zone up again: metering calls
    this for every server of a batch)."""
    local = moment.astimezone(tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return dt.date(local.year, local.month, 1), dt.datetime(year, month, 1, tzinfo=tz)


def rounded(exact: int, divisor: int) -> int:
    """``exact / divisor`` rounded half up (``exact`` is never negative)."""
    return (2 * exact + divisor) // (2 * divisor)


@dataclass(frozen=True, slots=True)
class Rate:
    """What an hour of one service costs now: ``per_hour`` in 1/divisor minor units (the
    divisor is its usage model's LIST_DIVISOR), under a month's ``cap`` in minor units
    (for a month whose record does not exist yet), in ``currency``."""

    per_hour: int
    cap: int
    currency: str


@dataclass(frozen=True, slots=True)
class MonthSpent:
    """What a service's usage record of one month holds already, and the cap it keeps
    for the month (the plan's cap when the month began: a plan edited mid-month changes
    the cap from the next month, as its price changes from the next hour)."""

    amount: int = 0
    refunded: int = 0
    cap: int | None = None
    list_exact: int = 0


@dataclass(frozen=True, slots=True)
class Accrual:
    """Hours of one service in one calendar month, priced under the cap: what a metering
    step adds to the month's usage record (and spends out of the allowance)."""

    service_id: uuid.UUID
    month: dt.date
    start: dt.datetime
    end: dt.datetime
    hours: int
    list_amount: int
    amount: int  # 0 once the month's cap is reached
    cap: int
    list_exact: int = 0  # the exact list price added, in 1/divisor minor units


def price_hours(
    *,
    service_id: uuid.UUID,
    start: dt.datetime,
    hours: int,
    per_hour: int,
    cap: int,
    spent: dict[dt.date, MonthSpent],
    divisor: int = 1,
    tz: dt.tzinfo | None = None,
) -> list[Accrual]:
    """``hours`` hours from ``start`` at ``per_hour`` (in 1/divisor minor units), split by
    the calendar month each hour starts in and priced under the month's cap, counting
    what the month's record already holds (``spent``, by month; refunded money does not
    count). ``tz``: the project's time zone, when the caller looked it up once for a
    whole batch."""
    accruals = []
    tz = tz or timezone.get_current_timezone()
    while hours > 0:
        first_day, month_end = _month_span(start, tz)
        in_month = min(hours, started_hours(start, month_end))
        end = start + in_month * HOUR
        accruals.append(
            _priced(
                service_id,
                first_day,
                start,
                end,
                in_month,
                in_month * per_hour,
                cap,
                spent.get(first_day, MonthSpent()),
                divisor,
            )
        )
        start, hours = end, hours - in_month
    return accruals


def _priced(
    service_id: uuid.UUID,
    month: dt.date,
    start: dt.datetime,
    end: dt.datetime,
    hours: int,
    exact: int,
    cap: int,
    already: MonthSpent,
    divisor: int,
) -> Accrual:
    """One month's step: ``exact`` more list price (1/divisor minor units) over ``hours``.
    It spends what the rounded list total moved by, within the room under the cap; and
    never less than keeps the month at min(cap, list) (I11's floor), which matters only
    when the cap rose (a volume grown mid-month)."""
    month_cap = cap if already.cap is None else already.cap
    list_total = rounded(already.list_exact + exact, divisor)
    list_amount = list_total - rounded(already.list_exact, divisor)
    room = max(month_cap + already.refunded - already.amount, 0)
    amount = max(min(list_amount, room), min(month_cap, list_total) - already.amount)
    return Accrual(service_id, month, start, end, hours, list_amount, amount, month_cap, exact)


def price_extra(
    *,
    service_id: uuid.UUID,
    hour_start: dt.datetime,
    exact: int,
    cap: int,
    spent: dict[dt.date, MonthSpent],
    divisor: int,
) -> Accrual:
    """More list price (``exact``, in 1/divisor minor units) for hours already accrued,
    in the month of the hour that starts at ``hour_start``: a volume grown during a paid
    hour pays the rest of that hour at its new size. No hours are added, and the span
    accrued does not move (the Accrual's start and end are the hour's end)."""
    first_day, _ = _month_span(hour_start, timezone.get_current_timezone())
    end = hour_start + HOUR
    return _priced(
        service_id, first_day, end, end, 0, exact, cap, spent.get(first_day, MonthSpent()), divisor
    )


def settle_every() -> dt.timedelta:
    """The settlement cadence: usage is closed into charges at least this often."""
    return dt.timedelta(hours=settings.IAAS_SETTLE_USAGE_EVERY_HOURS)


def close_due_at(month: dt.date, *, now: dt.datetime) -> dt.datetime:
    """When a settlement run should close what accrues at ``now`` in ``month``: after the
    cadence, and no later than the month's end."""
    return min(now + settle_every(), Month(month.year, month.month).end)


def _close_due_at_for_batch(now: dt.datetime):
    """When a settlement run should close what a batch's accruals opened, by their month:
    after the cadence, and no later than the month's end (looked up once per month of
    the batch, not per accrual)."""
    by_month: dict[dt.date, dt.datetime] = {}

    def due_at(month: dt.date) -> dt.datetime:
        if month not in by_month:
            by_month[month] = close_due_at(month, now=now)
        return by_month[month]

    return due_at


@dataclass(frozen=True, slots=True)
class UsageOwner:
    """Who a service's usage records belong to (copied onto each record)."""

    wallet_id: uuid.UUID
    owner_id: int
    currency: str


def spent_in_months(
    usage_model: type[AbstractUsage], service_ids, *, from_month: dt.date
) -> dict[uuid.UUID, dict[dt.date, MonthSpent]]:
    """What the services' usage records of ``from_month`` and later hold: one read for a
    whole batch (the service rows are locked, so no other step accrues on them)."""
    found: dict[uuid.UUID, dict[dt.date, MonthSpent]] = {}
    wanted = sql.rows("wanted", [("id", sql.column(usage_model, "service_id"))], [(i,) for i in service_ids])
    rows = sql.fetch(
        "SELECT u.service_id, u.month, u.amount, u.refunded, u.cap, u.list_exact "  # noqa: S608
        f"FROM {sql.table(usage_model)} u "
        f"JOIN wanted ON u.service_id = wanted.id WHERE u.month >= %s",
        wanted,
        [from_month],
    )
    as_id, as_month = (
        sql.column(usage_model, "service_id").to_python,
        sql.column(usage_model, "month").to_python,
    )
    for service_id, month, amount, refunded, cap, exact in rows:  # typed on PostgreSQL; text on SQLite
        found.setdefault(as_id(service_id), {})[as_month(month)] = MonthSpent(amount, refunded, cap, exact)
    return found


# The columns an accrual writes into its month's usage record, in order.
UPSERT_COLUMNS = (
    "service_id",
    "month",
    "wallet_id",
    "owner_id",
    "currency",
    "hours",
    "list_amount",
    "list_exact",
    "cap",
    "amount",
    "closed_amount",
    "closed_hours",
    "closed_until",
    "accrued_until",
    "close_due_at",
)


def upsert_accruals(
    usage_model: type[AbstractUsage],
    accruals: list[tuple[Accrual, UsageOwner]],
    *,
    now: dt.datetime,
    closed: bool = False,
) -> int:
    """Add the accruals to their months' usage records: one INSERT ... ON CONFLICT DO
    UPDATE for the whole list, creating a month's record on its first hour. It only
    adds (hours, amounts) and moves ``accrued_until`` forward, so the CHECKs hold on the
    proposed row. ``closed``: the accrual is already paid by a one-off charge (a server's
    first hour), so it is recorded as closed too."""
    if not accruals:
        return 0
    accruals = _one_per_record(accruals)
    field = usage_model._meta.get_field
    columns = [(name, field(name)) for name in UPSERT_COLUMNS]
    due_at = _close_due_at_for_batch(now)
    values = [_upsert_values(accrual, who, closed=closed, due_at=due_at) for accrual, who in accruals]
    relation = sql.rows("accrued", columns, values)
    names = ", ".join(UPSERT_COLUMNS)
    return sql.execute(
        f"INSERT INTO {sql.table(usage_model)} ({names}, refunded, updated_at) "  # noqa: S608
        f"SELECT {names}, 0, %s FROM accrued WHERE true {_on_conflict_add(usage_model, closed=closed)}",
        relation,
        [now],
    )


def upsert_write(
    usage_model: type[AbstractUsage],
    accrual: Accrual,
    who: UsageOwner,
    *,
    now: dt.datetime,
    closed: bool = False,
) -> statements.Write:
    """``upsert_accruals`` of one accrual, as a write to run together with the purchase's
    charge and event (one statement)."""
    field = usage_model._meta.get_field
    values = _upsert_values(accrual, who, closed=closed, due_at=_close_due_at_for_batch(now))
    prepared = [
        statements.prepared(field(name), value) for name, value in zip(UPSERT_COLUMNS, values, strict=True)
    ]
    placeholders = ", ".join(["%s"] * (len(UPSERT_COLUMNS) + 2))
    return statements.Write(
        f"INSERT INTO {sql.table(usage_model)} ({', '.join(UPSERT_COLUMNS)}, refunded, updated_at) "  # noqa: S608
        f"VALUES ({placeholders}) {_on_conflict_add(usage_model, closed=closed)}",
        (*prepared, 0, statements.prepared(field("updated_at"), now)),
    )


def _upsert_values(accrual: Accrual, who: UsageOwner, *, closed: bool, due_at) -> tuple:
    a = accrual
    return (
        a.service_id,
        a.month,
        who.wallet_id,
        who.owner_id,
        who.currency,
        a.hours,
        a.list_amount,
        a.list_exact,
        a.cap,
        a.amount,
        a.amount if closed else 0,
        a.hours if closed else 0,
        a.end if closed else a.start,
        a.end,
        None if closed or a.amount == 0 else due_at(a.month),
    )


def _on_conflict_add(usage_model: type[AbstractUsage], *, closed: bool) -> str:
    """What an accrual adds to a month's record that exists already."""
    usage = sql.table(usage_model)
    closing = (
        "closed_amount = {t}.closed_amount + excluded.closed_amount, "
        "closed_hours = {t}.closed_hours + excluded.closed_hours, "
        "closed_until = excluded.closed_until, "
        if closed
        else ""
    ).format(t=usage)
    return (
        f"ON CONFLICT (service_id, month) DO UPDATE SET "
        f"hours = {usage}.hours + excluded.hours, "
        f"list_amount = {usage}.list_amount + excluded.list_amount, "
        f"list_exact = {usage}.list_exact + excluded.list_exact, "
        f"amount = {usage}.amount + excluded.amount, "
        f"{closing}"
        f"accrued_until = excluded.accrued_until, "
        f"close_due_at = COALESCE({usage}.close_due_at, excluded.close_due_at), "
        f"updated_at = excluded.updated_at"
    )


def _one_per_record(accruals: list[tuple[Accrual, UsageOwner]]) -> list[tuple[Accrual, UsageOwner]]:
    """Accruals of the same service and month (a resumption pays the hours it ran unpaid
    and the hour from now) added into one: an upsert may touch a row once only."""
    merged: dict[tuple, tuple[Accrual, UsageOwner]] = {}
    for accrual, who in accruals:
        key = (accrual.service_id, accrual.month)
        if key in merged:
            first = merged[key][0]
            accrual = Accrual(
                accrual.service_id,
                accrual.month,
                min(first.start, accrual.start),
                max(first.end, accrual.end),
                first.hours + accrual.hours,
                first.list_amount + accrual.list_amount,
                first.amount + accrual.amount,
                accrual.cap,
                first.list_exact + accrual.list_exact,
            )
        merged[key] = (accrual, who)
    return list(merged.values())


def usage_this_month(usage_model: type[AbstractUsage], service_id: uuid.UUID, *, now=None) -> tuple[int, int]:
    """(hours, amount) of the service's usage record for the current month."""
    row = (
        usage_model.objects.filter(service_id=service_id, month=month_of(now or timezone.now()))
        .values_list("hours", "amount")
        .first()
    )
    return row or (0, 0)


def this_month_returning(
    usage_model: type[AbstractUsage], service_model, *, now: dt.datetime
) -> tuple[str, tuple]:
    """What a statement over the services' table (a batch's UPDATE ... RETURNING) returns
    of each service to show its usage of the current month: (id, hours, amount), zeros
    without a record; as SQL and its parameters. Two probes of the records' unique
    (service, month) index per row, for the rows the statement writes only."""
    usage, services = sql.table(usage_model), sql.table(service_model)
    month = usage_model._meta.get_field("month").get_db_prep_value(month_of(now), connection)
    record = f"FROM {usage} WHERE {usage}.service_id = {services}.id AND {usage}.month = %s"
    hours, amount = (f"COALESCE((SELECT {usage}.{name} {record}), 0)" for name in ("hours", "amount"))
    return f"{services}.id, {hours}, {amount}", (month, month)
