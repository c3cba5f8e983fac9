"""A selling context's own invariants, checked over its tables with set-based SQL (the
same statements on PostgreSQL and on the embedded SQLite): I11, a metered service's
usage records agree with the service, and no two charges of one service overlap in
time. Reconciliation reads them through the context's contract
(``SellingContext.check_usage``); only violations come back.

A record's list amount is its exact list (``list_exact``, in 1/LIST_DIVISOR minor units)
rounded once, half up. I11's amount rule is ``amount = min(cap + refunded, list_amount)`` exactly while no
refund touched the month. A refund raises the month's room under the cap for the hours
that follow (refunded money does not count towards the cap) without making the hours
already past the cap cost again, so with refunds the amount lies between
``min(cap, list_amount)`` and ``min(cap + refunded, list_amount)``: both bounds are
checked, and they meet when ``refunded`` is 0.
"""

from __future__ import annotations

import datetime as dt
import uuid

from django.db import connection
from django.db.models import Model

from iaas.contracts.checks import Violation

from .models import AbstractCharge, AbstractUsage
from .usage import rounded

# Enough to act on; a database that breaks a rule this often needs a person, not a list.
MAX_REPORTED = 1000
# Portable SQL (SQLite has no ANY(array)): one placeholder per id, in chunks well under
# both databases' limits on bound parameters.
PARAMETERS_PER_QUERY = 500

# Every record whose columns disagree with each other; the rules are told apart in
# Python (``_record_violations``), for the few rows that come back. One sequential pass:
# no ORDER BY (the answer is sorted in Python), no LEAST (SQLite's is MIN), no intervals.
USAGE_RECORDS = """
SELECT wallet_id, service_id, month, hours, closed_hours, list_amount, cap, amount, refunded,
       closed_amount, accrued_until, closed_until, close_due_at, list_exact
FROM {usage}
WHERE list_amount <> (2 * list_exact + {divisor}) / (2 * {divisor})
   OR amount < CASE WHEN cap < list_amount THEN cap ELSE list_amount END
   OR amount > CASE WHEN cap + refunded < list_amount THEN cap + refunded ELSE list_amount END
   OR cap < 0 OR closed_hours < 0 OR hours < closed_hours
   OR closed_amount < 0 OR amount < closed_amount OR refunded < 0 OR refunded > closed_amount
   OR accrued_until < closed_until
   OR (hours = closed_hours AND accrued_until <> closed_until)
   OR (hours <> closed_hours AND accrued_until = closed_until)
   OR (amount > closed_amount AND close_due_at IS NULL)
LIMIT {limit}
"""

# Each service against its records, in one pass: the records grouped by service and by
# the wallet and owner they name (one group per service, normally), joined to the
# service:
# - a running or suspended service is paid up to where its usage accrued until, its
#   latest record's ``accrued_until`` (a month's hours start in it, so the latest month's
#   record ends last): a run that moves ``paid_until`` without accruing, or accrues without
#   moving it, shows here. An ended service is not held to it (its end may close or refund
#   its last hours);
# - every record is on its service's wallet and owner (its spend came out of that
#   wallet's allowance), and a record of no service is spend nobody can account for.
# Aggregated before the join and without a LIMIT (the first rows are fetched instead), so
# the planner hashes both sides once rather than probing the service index per service
# (service ids are random UUIDs: index order is random reads).
SERVICES = """
SELECT u.service_id, s.wallet_id, s.status, s.{paid_until}, u.accrued_until,
       CASE WHEN s.id IS NULL OR u.wallet_id <> s.wallet_id OR u.owner_id <> s.owner_id
            THEN 1 ELSE 0 END
FROM (
    SELECT service_id, wallet_id, owner_id, MAX(accrued_until) AS accrued_until
    FROM {usage} GROUP BY service_id, wallet_id, owner_id
) u
LEFT JOIN {service} s ON s.id = u.service_id
WHERE s.id IS NULL OR u.wallet_id <> s.wallet_id OR u.owner_id <> s.owner_id
   OR (s.status IN ({statuses}) AND s.{paid_until} <> u.accrued_until)
"""

# The records of the few services flagged above that are not on their service's wallet.
STRANGERS = """
SELECT u.wallet_id, u.service_id, u.month, u.owner_id, s.wallet_id, s.owner_id
FROM {usage} u
LEFT JOIN {service} s ON s.id = u.service_id
WHERE u.service_id IN ({services})
  AND (s.id IS NULL OR u.wallet_id <> s.wallet_id OR u.owner_id <> s.owner_id)
"""

# Half-open periods [start, end) of one subject, in start order: a charge overlaps an
# earlier one exactly when it starts before the latest end so far. One sort, no self-join
# (a server has hundreds of charges a year). Empty periods overlap nothing, as in the
# exclusion constraint's tstzrange.
OVERLAPPING_CHARGES = """
SELECT wallet_id, subject_id, id, period_start, period_end, previous_end FROM (
    SELECT wallet_id, subject_id, id, period_start, period_end,
           MAX(period_end) OVER (
               PARTITION BY subject_id ORDER BY period_start, id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
           ) AS previous_end
    FROM {charge}
    WHERE period_end > period_start
) chained
WHERE period_start < previous_end
LIMIT {limit}
"""

EXCLUSION_CONSTRAINT = """
SELECT 1 FROM pg_constraint WHERE conrelid = CAST(%s AS regclass) AND conname = %s AND contype = 'x'
"""


def no_overlap_constraint(charge_model: type[AbstractCharge]) -> str:
    """The name of the exclusion constraint that holds the rule on PostgreSQL (the
    contexts' migrations create it)."""
    return f"{charge_model._meta.db_table}_no_overlap"


def usage_violations(
    *,
    context: str,
    usage_model: type[AbstractUsage],
    service_model: type[Model],
    paid_until_field: str = "paid_until",
    live_statuses: tuple[str, ...] = ("active", "suspended"),
) -> list[Violation]:
    """I11 over every usage record of a context and its services."""
    names = {
        "usage": _table(usage_model),
        "service": _table(service_model),
        "paid_until": connection.ops.quote_name(service_model._meta.get_field(paid_until_field).column),
        "statuses": ", ".join(["%s"] * len(live_statuses)),
        "limit": MAX_REPORTED,
        "divisor": int(usage_model.LIST_DIVISOR),
    }
    found: list[Violation] = []
    for row in _rows(USAGE_RECORDS.format(**names)):
        found += _record_violations(context, *row, divisor=usage_model.LIST_DIVISOR)
    strangers = []
    for service_id, wallet_id, status, paid_until, accrued_until, stray in _rows(
        SERVICES.format(**names), live_statuses, limit=MAX_REPORTED
    ):
        if stray:  # told below, record by record
            strangers.append(service_id)
        elif status in live_statuses and paid_until != accrued_until:
            found.append(
                Violation(
                    "I11",
                    _uuid(wallet_id),
                    _text(accrued_until),
                    _text(paid_until),
                    f"{context}: {paid_until_field} of {_uuid(service_id)} differs from where its usage "
                    f"accrued until",
                )
            )
    for chunk in _chunks(sorted(set(strangers), key=str), PARAMETERS_PER_QUERY):
        sql = STRANGERS.format(services=", ".join(["%s"] * len(chunk)), **names)
        for wallet_id, service_id, month, owner, s_wallet, s_owner in _rows(sql, chunk):
            what = f"{context}: usage of {_uuid(service_id)} in {_month(month)}"
            if s_wallet is None:
                found.append(
                    Violation("I11", _uuid(wallet_id), "a service", None, f"{what} belongs to no service")
                )
                continue
            found.append(
                Violation(
                    "I11",
                    _uuid(wallet_id),
                    {"wallet": str(_uuid(s_wallet)), "owner": s_owner},
                    {"wallet": str(_uuid(wallet_id)), "owner": owner},
                    f"{what} is not on its service's wallet and owner",
                )
            )
    return sorted(found, key=lambda v: (str(v.wallet_id), v.detail))


def charge_overlaps(*, context: str, charge_model: type[AbstractCharge]) -> list[Violation]:
    """Charges of one subject that overlap in time. On PostgreSQL the exclusion
    constraint refuses them, so the check is that the constraint is in place (a
    catalog look-up, not a pass over every charge); without it, and on SQLite, the
    charges themselves are checked."""
    table = charge_model._meta.db_table
    found: list[Violation] = []
    if connection.vendor == "postgresql":
        constraint = no_overlap_constraint(charge_model)
        if _rows(EXCLUSION_CONSTRAINT, [table, constraint]):
            return []
        found.append(
            Violation(
                "I11",
                None,
                f"exclusion constraint {constraint}",
                "missing",
                f"{context}: {table} does not refuse overlapping charges",
            )
        )
    overlaps = []
    for wallet_id, subject_id, charge_id, start, end, previous_end in _rows(
        OVERLAPPING_CHARGES.format(charge=_table(charge_model), limit=MAX_REPORTED)
    ):
        overlaps.append(
            Violation(
                "I11",
                _uuid(wallet_id),
                f"starts at or after {_text(previous_end)}",
                f"{_text(start)} to {_text(end)}",
                f"{context}: charge {_uuid(charge_id)} of {_uuid(subject_id)} overlaps an earlier charge "
                f"of the same service",
            )
        )
    return found + sorted(overlaps, key=lambda v: (str(v.wallet_id), v.detail))


def _record_violations(
    context: str,
    wallet_id,
    service_id,
    month,
    hours: int,
    closed_hours: int,
    list_amount: int,
    cap: int,
    amount: int,
    refunded: int,
    closed_amount: int,
    accrued_until,
    closed_until,
    close_due_at,
    list_exact: int,
    *,
    divisor: int,
) -> list[Violation]:
    """Which of a record's rules fail, one violation each."""
    wallet = _uuid(wallet_id)
    what = f"{context}: usage of {_uuid(service_id)} in {_month(month)}"
    found = []

    def report(expected, found_, detail):
        found.append(Violation("I11", wallet, expected, found_, f"{what}: {detail}"))

    if list_amount != rounded(list_exact, divisor):
        report(
            rounded(list_exact, divisor),
            list_amount,
            f"list amount is not the exact list {list_exact}/{divisor} rounded once",
        )
    least, most = min(cap, list_amount), min(cap + refunded, list_amount)
    if not least <= amount <= most:
        expected = most if least == most else {"at_least": least, "at_most": most}
        report(expected, amount, f"amount is not min(cap {cap} + refunded {refunded}, list {list_amount})")
    if cap < 0 or closed_hours < 0 or closed_amount < 0 or refunded < 0:
        report(">= 0", {"cap": cap, "closed_hours": closed_hours, "closed_amount": closed_amount}, "negative")
    if hours < closed_hours:
        report(f"<= {hours} (hours)", closed_hours, "more hours closed than accrued")
    if amount < closed_amount:
        report(f"<= {amount} (amount)", closed_amount, "more closed than spent")
    if refunded > closed_amount:
        report(f"<= {closed_amount} (closed)", refunded, "more refunded than closed")
    # Both timestamps come back alike (datetimes, or SQLite's text in one format).
    if accrued_until < closed_until:
        report(f"<= {_text(accrued_until)} (accrued until)", _text(closed_until), "closed past what accrued")
    if (accrued_until != closed_until) != (hours != closed_hours):
        report(
            {"open_hours": hours - closed_hours},
            {"closed_until": _text(closed_until), "accrued_until": _text(accrued_until)},
            "open hours and the span not yet closed disagree",
        )
    if amount > closed_amount and close_due_at is None:
        report("a close_due_at", None, f"{amount - closed_amount} spent and not closed, no settlement due")
    return found


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _rows(sql: str, params=(), *, limit: int | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        return cursor.fetchall() if limit is None else cursor.fetchmany(limit)


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _uuid(value) -> uuid.UUID | None:
    """SQLite hands back a UUID column as its 32 hex digits."""
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


def _text(value) -> str | None:
    """A timestamp as ISO text (SQLite hands back text already, in UTC)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(sep=" ")
    return str(value)


def _month(value) -> str:
    return str(value)[:7]
