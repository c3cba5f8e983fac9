"""Fleet-scale metering and settlement (issue 11): the hourly run and the settlement run
against hand-written SQL of the same design, in the same run, on the same seed.

    .venv/bin/python -m bench.metering --quick                        # 10,000 servers
    .venv/bin/python -m bench.metering                                # 100,000 servers
    .venv/bin/python -m bench.metering --servers 1000000 --wallets 200000
    .venv/bin/python -m bench.metering --only raw                     # the baseline alone

Why a raw baseline of the *same design*: on a 2-core box shared by the client and
PostgreSQL an absolute figure says little; what the issue asks is how close the real
commands come to the database's own limit for those writes. So, for each number of
workers (1, 2), on two seeds made the same way:

- **raw**: N processes, one connection each, each on a range of the wallet-id space
  (partition p of N takes ``wallet_id`` in ``[p*2^128/N, (p+1)*2^128/N)``; wallet ids are
  random UUIDs, so their leading bits are the hash), walking it with a keyset on
  ``(wallet_id, id)`` in batches of ``IAAS_BATCH_SIZE`` (2,000) services, whole wallets per
  batch, rows locked in the total order with ``FOR NO KEY UPDATE SKIP LOCKED`` before any
  write, one more pass at the end for what was busy. Hourly: 5 statements per batch
  (servers, allowances, the usage upsert, the allowance debit, ``paid_until``); a wallet
  whose allowance is short has its servers suspended ``unpaid`` in the same server
  UPDATE (no event, no history row: the real run writes those too, the baseline does
  not). Settlement: 9 statements per batch (usage records, wallets, holds, charges,
  usage closed, one ledger entry per wallet, wallets, holds, one capture per entry),
  Billing's side in the same transaction (there is no outbox row to keep it consistent
  in between, so it cannot be split).
- **real**: ``manage.py bill_usage --workers N --json``; ``manage.py settle_usage
  --workers N --json`` then N ``deliver_events --batch-size 1000 --json`` at once until
  nothing is pending.

Each run starts from its own fresh seed (a database copied from the migrated template
and seeded in SQL: ``paid_until`` is 30 minutes ago, so exactly one started hour is due,
and that stays true only for 30 minutes, so seeds are not reused). The seed is checked
by the bench's own books check (I1, I3, I4 with the accrued term, I11) and by
``manage.py reconcile``; then the hourly run is timed with a purchase probe beside it
(``cloud.services.server_create`` on random paying wallets, paced, its p50/p99 the
customer's view of a run going on), its rows inserted and bytes written measured, I11
checked; the settlement run likewise; then the books check and ``reconcile`` again.

Prints the table BENCHMARKS.md carries (markdown); writes
bench/results/metering-<time>.json (each baseline statement kind's time included) and
bench/results/metering.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import queue
import random
import re
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from . import common
from .common import (
    RESULTS,
    ROOT,
    SPAWN,
    connect,
    db_url,
    machine,
    migrate_template,
    percentile,
    recreate_database,
    write_json,
)

DATABASE = "bench_metering"
# The checkout whose commands are timed (--app-dir: another worktree's, read-only).
APP_DIR = ROOT
BATCH_SIZE = 2000  # IAAS_BATCH_SIZE's default: the real runs' batch
BATCH_LOCK_TIMEOUT = "500ms"  # IAAS_BATCH_LOCK_TIMEOUT_MS's default
HOUR = dt.timedelta(hours=1)
UTC = dt.UTC  # the project's TIME_ZONE (iaas/settings/base.py): months are UTC months

CHUNK = 5_000  # a paying wallet's Cloud allowance: many hours of its servers
SPARE = 100_000  # a paying wallet's unreserved balance (1,000.00 EUR)
SUBSCRIPTIONS = 2  # hosting subscriptions per wallet, paid and settled, not due
MAX_AGE_HOURS = 720  # servers were bought up to 30 days ago (a mix under and over the cap)
BROKE_EVERY = 20  # every 20th wallet (5%) cannot pay: no allowance, nothing available

PURCHASE_PLAN = "s-1vcpu-1gb"
PROBE_IDLE_S = 3.0  # the purchase probe's seconds before the run starts


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


def month_start(moment: dt.datetime) -> dt.datetime:
    moment = moment.astimezone(UTC)
    return dt.datetime(moment.year, moment.month, 1, tzinfo=UTC)


def next_month(start: dt.datetime) -> dt.datetime:
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


# --- the seed ---------------------------------------------------------------------------------

# One transaction, set-based. Ids are md5 of a counter, so every seed has the same wallets
# (the same partitions); amounts follow from the rows, so the books agree by construction:
#   usage: hours since the month's start (or the server's purchase) up to paid_until,
#     amount = min(cap, hours x price), nothing closed yet (all of it accrued, due now);
#   cloud allowance: CHUNK (0 for the broke), granted = allowance + accrued,
#     charged = accrued; cloud hold = the same amount and grant, nothing captured;
#   hosting: SUBSCRIPTIONS a wallet, their month bought and settled (one ledger entry
#     per wallet, one capture, a charge per subscription pointing at it);
#   ledger: the top-up (sequence 1), the hosting entry (sequence 2); the wallet's
#     balance = their sum, reserved = the cloud hold (available = SPARE, or 0 for the broke).
SEED = [
    (
        "customers",
        """
        INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                               is_staff, is_active, date_joined)
        SELECT '!', false, 'mb-' || g, '', '', '', false, true, %(now)s
        FROM generate_series(1, %(wallets)s) g
        """,
    ),
    (
        "wallets (plan)",
        """
        CREATE TEMP TABLE mw ON COMMIT DROP AS
        SELECT g AS i, u.id AS owner_id, md5('mw-' || g)::uuid AS wallet_id,
               (g %% %(broke_every)s = 0) AS broke
        FROM generate_series(1, %(wallets)s) g JOIN auth_user u ON u.username = 'mb-' || g
        """,
    ),
    ("", "ALTER TABLE mw ADD PRIMARY KEY (i)"),
    (
        "servers (plan)",
        """
        CREATE TEMP TABLE ms ON COMMIT DROP AS
        WITH plans AS (
            SELECT row_number() OVER (ORDER BY price_per_hour, id) - 1 AS k, id, price_per_hour,
                   monthly_cap, currency, count(*) OVER () AS n
            FROM cloud_serverplan WHERE is_active
        ), servers AS (
            SELECT j, 1 + (j - 1) %% %(wallets)s AS i, (j - 1) / %(wallets)s AS nth,
                   1 + (j::bigint * 2654435761) %% %(max_age)s AS age
            FROM generate_series(1, %(servers)s) j
        )
        SELECT s.j, md5('ms-' || s.j)::uuid AS server_id, w.owner_id, w.wallet_id, p.id AS plan_id,
               p.price_per_hour AS price, p.monthly_cap AS cap, p.currency,
               %(paid_until)s - s.age * interval '1 hour' AS created_at,
               LEAST(s.age, floor(extract(epoch FROM %(paid_until)s - %(month)s) / 3600))::int AS hours
        FROM servers s JOIN mw w ON w.i = s.i
        JOIN plans p ON p.k = (s.nth + s.i) %% p.n
        """,
    ),
    (
        "servers",
        """
        INSERT INTO cloud_server (id, wallet_id, name, status, created_at, paid_until, suspended_at,
                                  terminated_at, owner_id, plan_id, operator_hold_since, operator_reason,
                                  unpaid_since, wallet_blocked_since)
        SELECT server_id, wallet_id, 'mb-' || j, 'active', created_at, %(paid_until)s, NULL, NULL,
               owner_id, plan_id, NULL, '', NULL, NULL
        FROM ms ORDER BY wallet_id, server_id
        """,
    ),
    (
        "usage records",
        """
        INSERT INTO cloud_usage (service_id, month, wallet_id, owner_id, currency, hours, list_amount,
                                 list_exact, cap, amount, refunded, accrued_until, closed_amount,
                                 closed_hours, closed_until, close_due_at, updated_at)
        SELECT server_id, %(month)s::date, wallet_id, owner_id, currency, hours, hours * price,
               hours * price, cap,
               LEAST(cap, hours * price), 0, %(paid_until)s, 0, 0,
               %(paid_until)s - hours * interval '1 hour', %(now)s, %(now)s
        FROM ms WHERE hours > 0 ORDER BY wallet_id, server_id
        """,
    ),
    (
        "subscriptions (plan)",
        """
        CREATE TEMP TABLE mh ON COMMIT DROP AS
        WITH plans AS (
            SELECT row_number() OVER (ORDER BY price_per_month, id) - 1 AS k, id, price_per_month,
                   count(*) OVER () AS n
            FROM hosting_hostingplan WHERE is_active
        ), subs AS (
            SELECT w.*, k, %(now)s + (1 + (w.i * 31 + k * 7) %% 28) * interval '1 day' AS period_end
            FROM mw w CROSS JOIN generate_series(1, %(subscriptions)s) k
        )
        SELECT s.i, s.k, s.owner_id, s.wallet_id, md5('mh-' || s.i || '-' || s.k)::uuid AS sub_id,
               p.id AS plan_id, p.price_per_month AS price, s.period_end,
               s.period_end - interval '1 month' AS period_start
        FROM subs s JOIN plans p ON p.k = (s.i + s.k) %% p.n
        """,
    ),
    (
        "subscriptions",
        """
        INSERT INTO hosting_subscription (id, wallet_id, domain, status, created_at, current_period_end,
                                          suspended_at, cancelled_at, owner_id, plan_id, period_anchor,
                                          operator_hold_since, operator_reason, unpaid_since,
                                          wallet_blocked_since)
        SELECT sub_id, wallet_id, 'mb-' || i || '-' || k || '.bench.example', 'active', period_start,
               period_end, NULL, NULL, owner_id, plan_id, period_start, NULL, '', NULL, NULL
        FROM mh
        """,
    ),
    (
        "wallet totals (plan)",
        """
        CREATE TEMP TABLE ma ON COMMIT DROP AS
        SELECT w.i, w.owner_id, w.wallet_id, w.broke,
               COALESCE(u.accrued, 0) AS accrued, COALESCE(h.hosting, 0) AS hosting,
               h.last_period_start,
               CASE WHEN w.broke THEN 0 ELSE %(chunk)s END AS allowance,
               md5('mt-' || w.i)::uuid AS top_up_id, md5('me1-' || w.i)::uuid AS top_up_entry,
               md5('me2-' || w.i)::uuid AS hosting_entry, md5('mc-' || w.i)::uuid AS hosting_source
        FROM mw w
        LEFT JOIN (SELECT wallet_id, sum(LEAST(cap, hours * price))::bigint AS accrued
                   FROM ms WHERE hours > 0 GROUP BY wallet_id) u ON u.wallet_id = w.wallet_id
        LEFT JOIN (SELECT wallet_id, sum(price)::bigint AS hosting, max(period_start) AS last_period_start
                   FROM mh GROUP BY wallet_id) h ON h.wallet_id = w.wallet_id
        """,
    ),
    (
        "wallets",
        """
        INSERT INTO billing_wallet (id, owner_id, currency, status, balance, reserved, ledger_sequence,
                                    created_at, updated_at)
        SELECT wallet_id, owner_id, 'EUR', 'active',
               allowance + accrued + CASE WHEN broke THEN 0 ELSE %(spare)s END,
               allowance + accrued, CASE WHEN hosting > 0 THEN 2 ELSE 1 END,
               %(now)s - interval '60 days', %(now)s
        FROM ma ORDER BY wallet_id
        """,
    ),
    (
        "ledger",
        """
        INSERT INTO billing_ledgerentry (id, wallet_id, sequence, kind, amount, balance_after,
                                         transaction_date, posted_at, description, reference, context,
                                         source_id, created_by_id)
        SELECT e.* FROM ma
        CROSS JOIN LATERAL (
            SELECT hosting + allowance + accrued + CASE WHEN broke THEN 0 ELSE %(spare)s END AS t
        ) tt
        CROSS JOIN LATERAL (
            SELECT top_up_entry, wallet_id, 1::bigint, 'top_up', t, t,
                   %(now)s - interval '60 days', %(now)s - interval '60 days', 'Top-up via sandbox',
                   'top-up:' || top_up_id, '', top_up_id, NULL::int
            UNION ALL
            SELECT hosting_entry, wallet_id, 2, 'charge', -hosting, t - hosting,
                   last_period_start, last_period_start, 'Hosting', 'charges:' || hosting_source,
                   'hosting', hosting_source, NULL
            WHERE hosting > 0
        ) e
        ORDER BY 2, 3
        """,
    ),
    (
        "top-ups",
        """
        INSERT INTO billing_topup (id, wallet_id, amount, currency, status, provider, provider_reference,
                                   reference, created_at, completed_at, ledger_entry_id)
        SELECT top_up_id, wallet_id,
               hosting + allowance + accrued + CASE WHEN broke THEN 0 ELSE %(spare)s END,
               'EUR', 'succeeded', 'sandbox', '', 'mb-seed-' || top_up_id, %(now)s - interval '60 days',
               %(now)s - interval '60 days', top_up_entry
        FROM ma
        """,
    ),
    (
        "hosting charges",
        """
        INSERT INTO hosting_charge (id, wallet_id, amount, currency, description, subject_id, period_start,
                                    period_end, transaction_date, created_at, owner_id, refunded_amount,
                                    ledger_entry_id)
        SELECT md5('mhc-' || h.i || '-' || h.k)::uuid, h.wallet_id, h.price, 'EUR',
               'Hosting ' || h.plan_id || ', one month', h.sub_id, h.period_start, h.period_end,
               h.period_start, h.period_start, h.owner_id, 0, a.hosting_entry
        FROM mh h JOIN ma a ON a.wallet_id = h.wallet_id
        """,
    ),
    (
        "reservations",
        """
        INSERT INTO billing_reservation (id, wallet_id, context, kind, amount, source_id, ledger_entry_id,
                                         created_at)
        SELECT md5('mrc-' || i)::uuid, wallet_id, 'cloud', 'grant', allowance + accrued, NULL::uuid,
               NULL::uuid, %(now)s - interval '30 days'
        FROM ma WHERE allowance + accrued > 0
        UNION ALL
        SELECT md5('mrh-' || i)::uuid, wallet_id, 'hosting', 'grant', hosting, NULL::uuid, NULL::uuid,
               last_period_start
        FROM ma WHERE hosting > 0
        UNION ALL
        SELECT md5('mrx-' || i)::uuid, wallet_id, 'hosting', 'capture', hosting, hosting_source,
               hosting_entry, last_period_start
        FROM ma WHERE hosting > 0
        """,
    ),
    (
        "holds",
        """
        INSERT INTO billing_hold (wallet_id, context, amount, granted_total, captured_total, released_total)
        SELECT wallet_id, 'cloud', allowance + accrued, allowance + accrued, 0, 0 FROM ma
        UNION ALL
        SELECT wallet_id, 'hosting', 0, hosting, hosting, 0 FROM ma
        ORDER BY 1, 2
        """,
    ),
    (
        "allowances",
        """
        INSERT INTO cloud_allowance (wallet_id, owner_id, currency, amount, granted_total, charged_total,
                                     released_total, created_at, last_used_at, blocked)
        SELECT wallet_id, owner_id, 'EUR', allowance, allowance + accrued, accrued, 0,
               %(now)s - interval '30 days', %(paid_until)s, false
        FROM ma ORDER BY wallet_id
        """,
    ),
    (
        "",
        """
        INSERT INTO hosting_allowance (wallet_id, owner_id, currency, amount, granted_total, charged_total,
                                       released_total, created_at, last_used_at, blocked)
        SELECT wallet_id, owner_id, 'EUR', 0, hosting, hosting, 0, last_period_start, last_period_start, false
        FROM ma ORDER BY wallet_id
        """,
    ),
]


def seed(
    database: str,
    *,
    servers: int,
    wallets: int,
    subscriptions: int = SUBSCRIPTIONS,
    fillfactor: int | None = None,
    connect: Callable[..., psycopg.Connection] | None = None,
) -> dict:
    """Seed ``servers`` servers on ``wallets`` wallets (see SEED) into a migrated, empty
    ``database``; then VACUUM ANALYZE and CHECKPOINT, so every run starts with the same
    clean pages. Returns the instants the seed is built on and its timings.

    ``fillfactor`` (an experiment, not the schema's): leave that much of each page of
    the servers and usage records free, room for HOT updates. ``connect(database,
    **kwargs)``: how to open a connection (default: this machine's benchmark server,
    ``bench.common.connect``; bench/cluster.py passes one to its data host)."""
    connect = connect or common.connect
    now = dt.datetime.now(UTC)
    paid_until = now - dt.timedelta(minutes=30)
    params = {
        "now": now,
        "paid_until": paid_until,
        "month": month_start(paid_until),
        "wallets": wallets,
        "servers": servers,
        "subscriptions": subscriptions,
        "max_age": MAX_AGE_HOURS,
        "chunk": CHUNK,
        "spare": SPARE,
        "broke_every": BROKE_EVERY,
    }
    steps: dict[str, float] = {}
    started = time.perf_counter()
    with connect(database) as conn:
        conn.execute("SET work_mem = '256MB'")
        conn.execute("SET maintenance_work_mem = '512MB'")
        # A bulk load of consistent rows skips the per-row triggers (the foreign keys'
        # deferred checks took 50 of 125 s at 1,000,000 servers, the ledger's I9 trigger
        # more), as ARCHITECTURE.md allows a restore or a benchmark's seed to: the books
        # check and reconcile below check what they would have.
        conn.execute("SET session_replication_role = replica")
        if fillfactor:
            for table in ("cloud_server", "cloud_usage"):
                conn.execute(f"ALTER TABLE {table} SET (fillfactor = {int(fillfactor)})")
        for label, sql in SEED:
            t0 = time.perf_counter()
            conn.execute(sql, params)
            if sql.lstrip().startswith("CREATE TEMP TABLE"):
                conn.execute(f"ANALYZE {sql.split()[3]}")
            if label:
                steps[label] = round(time.perf_counter() - t0, 2)
        conn.commit()
    seeded_s = time.perf_counter() - started
    t0 = time.perf_counter()
    with connect(database, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    return {
        "now": now,
        "paid_until": paid_until,
        "month": month_start(paid_until),
        "servers": servers,
        "wallets": wallets,
        "seed_s": round(seeded_s, 1),
        "vacuum_s": round(time.perf_counter() - t0, 1),
        "steps_s": steps,
    }


# --- the bench's own checks (the final rules, whatever reconcile has so far) ------------------

# I1, I2, I3 and I4 with the accrued term, per wallet and context: the hold = allowance +
# accrued-not-closed + pending; Billing granted = the context received; the context
# charged = captured + accrued-not-closed + pending; released = applied. Pending outbox
# charges must have been delivered before (the check says how many are left).
BOOKS = """
WITH ledger AS (SELECT wallet_id, sum(amount) AS total FROM billing_ledgerentry GROUP BY wallet_id),
holds AS (SELECT wallet_id, sum(amount) AS held FROM billing_hold GROUP BY wallet_id),
accrued AS (SELECT wallet_id, sum(amount - closed_amount) AS open FROM cloud_usage GROUP BY wallet_id),
selling AS (
    SELECT 'cloud' AS context, a.wallet_id, a.amount, a.granted_total, a.charged_total, a.released_total,
           COALESCE(x.open, 0) AS open
    FROM cloud_allowance a LEFT JOIN accrued x ON x.wallet_id = a.wallet_id
    UNION ALL
    SELECT 'hosting', wallet_id, amount, granted_total, charged_total, released_total, 0
    FROM hosting_allowance
),
i4 AS (
    SELECT count(*) FILTER (WHERE h.amount IS DISTINCT FROM s.amount + s.open) AS hold,
           count(*) FILTER (WHERE h.granted_total IS DISTINCT FROM s.granted_total) AS granted,
           count(*) FILTER (WHERE s.charged_total IS DISTINCT FROM h.captured_total + s.open) AS charged,
           count(*) FILTER (WHERE s.released_total IS DISTINCT FROM h.released_total) AS released
    FROM selling s FULL OUTER JOIN billing_hold h ON h.wallet_id = s.wallet_id AND h.context = s.context
)
SELECT
    (SELECT count(*) FROM billing_wallet w LEFT JOIN ledger l ON l.wallet_id = w.id
     WHERE w.balance IS DISTINCT FROM COALESCE(l.total, 0)) AS i1,
    (SELECT count(*) FROM billing_wallet WHERE reserved < 0 OR reserved > balance) AS i2,
    (SELECT count(*) FROM billing_wallet w LEFT JOIN holds h ON h.wallet_id = w.id
     WHERE w.reserved IS DISTINCT FROM COALESCE(h.held, 0)) AS i3,
    i4.hold AS i4_hold, i4.granted AS i4_granted, i4.charged AS i4_charged, i4.released AS i4_released,
    (SELECT count(*) FROM contracts_outboxmessage WHERE status <> 'done'
       AND event_type IN ('ChargeRecorded', 'ChargesRecorded', 'AllowanceReleased')) AS pending
FROM i4
"""

# I11 for every server that has paid for an hour: the usage record of the month its last
# paid hour started in exists, ends where the server is paid until, has the hours paid in
# that month (the hours on the server's grid, which ends at paid_until, starting since the
# month's start, or all of them since the purchase if that is later: a purchase's
# created_at is a moment after the instant its first hour starts, hence ceil), the list
# price of those hours and amount = min(cap + refunded, list_amount).
I11 = """
WITH s AS (
    SELECT s.id, s.status, s.created_at, s.paid_until, p.price_per_hour AS price, p.monthly_cap AS cap,
           date_trunc('month', s.paid_until - interval '1 hour', 'UTC') AS month_start
    FROM cloud_server s JOIN cloud_serverplan p ON p.id = s.plan_id
    WHERE s.status <> 'terminated' AND s.paid_until > s.created_at
)
SELECT count(*) AS servers,
       count(*) FILTER (WHERE u.id IS NULL) AS missing,
       count(*) FILTER (WHERE u.accrued_until <> s.paid_until) AS accrued_until,
       count(*) FILTER (WHERE u.hours <> LEAST(
           ceil(extract(epoch FROM s.paid_until - s.created_at) / 3600),
           floor(extract(epoch FROM s.paid_until - s.month_start) / 3600))) AS hours,
       count(*) FILTER (WHERE u.list_amount <> u.hours * s.price OR u.list_exact <> u.list_amount)
           AS list_amount,
       count(*) FILTER (WHERE u.cap <> s.cap OR u.amount <> LEAST(u.cap + u.refunded, u.list_amount))
           AS amount,
       count(*) FILTER (WHERE s.status = 'active') AS active,
       count(*) FILTER (WHERE s.status = 'suspended') AS suspended
FROM s LEFT JOIN cloud_usage u ON u.service_id = s.id AND u.month = (s.month_start AT TIME ZONE 'UTC')::date
"""


def books_check(database: str) -> dict:
    """The bench's own check of the seed and of each run's end state. ``ok`` when every
    count of disagreeing rows is 0 and nothing is pending."""
    with connect(database, autocommit=True) as conn:
        conn.execute("SET work_mem = '256MB'")
        cursor = conn.execute(BOOKS)
        books = dict(zip([c.name for c in cursor.description], cursor.fetchone(), strict=True))
        cursor = conn.execute(I11)
        i11 = dict(zip([c.name for c in cursor.description], cursor.fetchone(), strict=True))
    i11_bad = {k: v for k, v in i11.items() if k not in ("servers", "active", "suspended") and v}
    return {
        "ok": not any(books.values()) and not i11_bad,
        "books": books,
        "i11": i11,
        "i11_ok": not i11_bad,
    }


# --- the raw SQL baseline ---------------------------------------------------------------------


def partition(part: int, parts: int) -> tuple[uuid.UUID, uuid.UUID | None]:
    """Wallet ids ``[lo, hi)`` of partition ``part`` of ``parts`` (hi None: to the end)."""
    lo = uuid.UUID(int=part * 2**128 // parts)
    hi = None if part == parts - 1 else uuid.UUID(int=(part + 1) * 2**128 // parts)
    return lo, hi


def _in_partition(column: str, hi: uuid.UUID | None) -> str:
    return f"{column} >= %(lo)s" + (f" AND {column} < %(hi)s" if hi else "")


def _whole_wallets(rows: list, limit: int, wallet_of) -> list:
    """A full batch gives its last wallet back (it may go on in the next rows), unless it
    is the only one: a batch claims whole wallets."""
    if len(rows) < limit:
        return rows
    last = wallet_of(rows[-1])
    kept = [r for r in rows if wallet_of(r) != last]
    return kept or rows


# An array parameter, ``%s::uuid[]`` or ``%(ids)s::uuid[]``.
BINARY_ARRAY = re.compile(r"%(\(\w+\))?s::(\w+)\[\]")


class RawWorker:
    """One worker of the baseline: one connection, one partition, statements counted."""

    def __init__(self, database: str, part: int, parts: int, now: dt.datetime, batch_size: int) -> None:
        self.conn = connect(database)
        self.conn.execute(f"SET lock_timeout = '{BATCH_LOCK_TIMEOUT}'")
        self.conn.commit()
        self.lo, self.hi = partition(part, parts)
        self.now = now
        self.batch_size = batch_size
        self.tally: Counter[str] = Counter()

    def execute(self, label: str, sql: str, params=None):
        """Run one statement, counted, its time added to ``ms <label>`` (where the time goes).
        Arrays are sent in binary (``%b``), as the app sends them: psycopg quotes a text
        array element by element in Python."""
        sql = BINARY_ARRAY.sub(r"%\1b::\2[]", sql)
        self.tally["statements"] += 1
        started = time.perf_counter()
        try:
            return self.conn.execute(sql, params)
        finally:
            self.tally[f"ms {label}"] += (time.perf_counter() - started) * 1000

    def next_batch(self, label: str, select: str, wallet_column: str, last, *, wallet_at: int) -> list:
        """The partition's next rows after the keyset ``last``, locked by ``select`` (a
        statement with a ``{partition}`` condition), cut back to whole wallets (the
        wallet id is column ``wallet_at``)."""
        rows = self.execute(
            label,
            select.format(partition=_in_partition(wallet_column, self.hi)),
            {
                "now": self.now,
                "lo": self.lo,
                "hi": self.hi,
                "last_wallet": last[0],
                "last_id": last[1],
                "limit": self.batch_size,
            },
        ).fetchall()
        return _whole_wallets(rows, self.batch_size, lambda r: r[wallet_at]) if rows else rows

    def walk(self, batch) -> None:
        """Two passes over the partition by keyset: the second picks up what the first
        found busy (or lost to a lock timeout)."""
        started = time.perf_counter()
        for _ in range(2):
            last = (self.lo, uuid.UUID(int=0))
            while True:
                statements = self.tally["statements"]
                try:
                    found = batch(last)
                    committing = time.perf_counter()
                    self.conn.commit()
                    self.tally["ms commit"] += (time.perf_counter() - committing) * 1000
                except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as error:
                    self.conn.rollback()
                    self.tally[type(error).__name__] += 1
                    if self.tally[type(error).__name__] > 20:
                        raise
                    time.sleep(0.05)
                    continue
                if found is None:  # the empty SELECT that ends a pass is not a batch
                    self.tally["pass_end_statements"] += self.tally["statements"] - statements
                    break
                last = found
                self.tally["batches"] += 1
        self.tally["work_ms"] = round((time.perf_counter() - started) * 1000)


# The servers are chosen and locked in key order first (an incremental sort over the
# wallet_id index, stopped by the LIMIT), then joined: with the join around the LIMIT the
# planner sorts the partition's whole remainder at every batch.
HOURLY_SELECT = """
SELECT s.id, s.wallet_id, s.owner_id, s.paid_until, p.price_per_hour, p.monthly_cap, p.currency,
       COALESCE(u.amount, 0), COALESCE(u.refunded, 0)
FROM (
    SELECT s.id, s.wallet_id, s.owner_id, s.paid_until, s.plan_id FROM cloud_server s
    WHERE s.status = 'active' AND s.paid_until < %(now)s AND {partition}
      AND s.wallet_id >= %(last_wallet)s AND (s.wallet_id, s.id) > (%(last_wallet)s, %(last_id)s)
    ORDER BY s.wallet_id, s.id
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
) s
JOIN cloud_serverplan p ON p.id = s.plan_id
LEFT JOIN cloud_usage u
       ON u.service_id = s.id
      AND u.month = (date_trunc('month', s.paid_until, 'UTC') AT TIME ZONE 'UTC')::date
ORDER BY s.wallet_id, s.id
"""

HOURLY_ALLOWANCES = """
SELECT wallet_id, amount, blocked FROM cloud_allowance
WHERE wallet_id = ANY(%s::uuid[]) ORDER BY wallet_id FOR NO KEY UPDATE SKIP LOCKED
"""

HOURLY_USAGE = """
INSERT INTO cloud_usage AS u (service_id, month, wallet_id, owner_id, currency, hours, list_amount,
                              list_exact, cap, amount, refunded, closed_amount, closed_hours, closed_until,
                              accrued_until, close_due_at, updated_at)
SELECT t.service_id, t.month, t.wallet_id, t.owner_id, t.currency, t.hours, t.list_amount, t.list_amount,
       t.cap, t.amount, 0, 0, 0, t.start, t.accrued_until, t.close_due_at, %s
FROM unnest(%s::uuid[], %s::date[], %s::uuid[], %s::int[], %s::text[], %s::int[], %s::bigint[], %s::bigint[],
            %s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[])
     AS t(service_id, month, wallet_id, owner_id, currency, hours, list_amount, cap, amount, start,
          accrued_until, close_due_at)
ON CONFLICT (service_id, month) DO UPDATE SET
    hours = u.hours + excluded.hours,
    list_amount = u.list_amount + excluded.list_amount,
    list_exact = u.list_exact + excluded.list_exact,
    amount = u.amount + excluded.amount,
    cap = excluded.cap,
    accrued_until = excluded.accrued_until,
    close_due_at = COALESCE(u.close_due_at, excluded.close_due_at),
    updated_at = excluded.updated_at
"""

HOURLY_DEBIT = """
UPDATE cloud_allowance a
SET amount = a.amount - t.total, charged_total = a.charged_total + t.total, last_used_at = %s
FROM unnest(%s::uuid[], %s::bigint[]) AS t(wallet_id, total)
WHERE a.wallet_id = t.wallet_id
"""

HOURLY_SERVERS = """
UPDATE cloud_server s
SET paid_until = CASE WHEN t.unpaid THEN s.paid_until ELSE t.paid_until END,
    status = CASE WHEN t.unpaid THEN 'suspended' ELSE s.status END,
    unpaid_since = CASE WHEN t.unpaid THEN %(now)s ELSE s.unpaid_since END,
    suspended_at = CASE WHEN t.unpaid THEN %(now)s ELSE s.suspended_at END
FROM unnest(%(ids)s::uuid[], %(paid_until)s::timestamptz[], %(unpaid)s::bool[]) AS t(id, paid_until, unpaid)
WHERE s.id = t.id
"""


def price_hours(start: dt.datetime, hours: int, price: int, cap: int, spent: int, refunded: int):
    """The kit's rule (iaas.spending.usage.price_hours): a started hour belongs to the month
    it starts in, each month's hours cost ``price`` each until the cap (refunds do not
    count towards it). Yields (month, start, end, hours, list_amount, amount)."""
    first = True
    while hours > 0:
        month = month_start(start)
        in_month = min(hours, math.ceil((next_month(month) - start) / HOUR))
        end = start + in_month * HOUR
        already, back = (spent, refunded) if first else (0, 0)
        room = max(cap + back - already, 0)
        list_amount = in_month * price
        yield month.date(), start, end, in_month, list_amount, min(list_amount, room)
        start, hours, first = end, hours - in_month, False


class RawHourly(RawWorker):
    def batch(self, last):
        now = self.now
        rows = self.next_batch("servers", HOURLY_SELECT, "s.wallet_id", last, wallet_at=1)
        if not rows:
            return None
        wallets = sorted({r[1] for r in rows})
        allowances = {
            w: (amount, blocked)
            for w, amount, blocked in self.execute("allowances", HOURLY_ALLOWANCES, [wallets]).fetchall()
        }
        due_at = now + dt.timedelta(hours=24)
        usage, totals, servers = [], defaultdict(int), {}
        per_wallet = defaultdict(list)
        for server_id, wallet_id, owner_id, paid_until, price, cap, currency, spent, refunded in rows:
            if wallet_id not in allowances:
                self.tally["busy"] += 1  # deferred to the next pass
                continue
            hours = math.ceil((now - paid_until) / HOUR)
            accruals = list(price_hours(paid_until, hours, price, cap, spent, refunded))
            per_wallet[wallet_id].append((server_id, owner_id, currency, cap, accruals))
            totals[wallet_id] += sum(a[5] for a in accruals)
        for wallet_id, items in per_wallet.items():
            amount, blocked = allowances[wallet_id]
            unpaid = blocked or amount < totals[wallet_id]
            for server_id, owner_id, currency, cap, accruals in items:
                servers[server_id] = (accruals[-1][2], unpaid)
                if unpaid:
                    continue
                for month, start, end, hours, list_amount, charged in accruals:
                    close = min(due_at, next_month(dt.datetime.combine(month, dt.time(), UTC)))
                    usage.append(
                        (
                            server_id,
                            month,
                            wallet_id,
                            owner_id,
                            currency,
                            hours,
                            list_amount,
                            cap,
                            charged,
                            start,
                            end,
                            close if charged else None,
                        )
                    )
                    self.tally["hours"] += hours
                    self.tally["amount"] += charged
            if unpaid:
                totals.pop(wallet_id)
                self.tally["suspended"] += len(items)
            else:
                self.tally["charged"] += len(items)
        if usage:
            columns = list(zip(*usage, strict=True))
            self.execute("usage upsert", HOURLY_USAGE, [now, *map(list, columns)])
        debits = [(w, t) for w, t in sorted(totals.items()) if t > 0]
        if debits:
            self.execute(
                "allowance debit", HOURLY_DEBIT, [now, [w for w, _ in debits], [t for _, t in debits]]
            )
        if servers:
            ids = sorted(servers)
            self.execute(
                "paid_until",
                HOURLY_SERVERS,
                {
                    "now": now,
                    "ids": ids,
                    "paid_until": [servers[i][0] for i in ids],
                    "unpaid": [servers[i][1] for i in ids],
                },
            )
        return rows[-1][1], rows[-1][0]


SETTLE_SELECT = """
SELECT u.id, u.service_id, u.wallet_id, u.owner_id, u.currency, u.amount - u.closed_amount,
       u.closed_until, u.accrued_until, u.month
FROM cloud_usage u
WHERE u.close_due_at IS NOT NULL AND u.close_due_at <= %(now)s AND {partition}
  AND u.wallet_id >= %(last_wallet)s AND (u.wallet_id, u.service_id) > (%(last_wallet)s, %(last_id)s)
ORDER BY u.wallet_id, u.service_id
LIMIT %(limit)s
FOR NO KEY UPDATE SKIP LOCKED
"""

SETTLE_WALLETS = """
SELECT id, balance, ledger_sequence FROM billing_wallet
WHERE id = ANY(%s::uuid[]) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
"""

SETTLE_HOLDS = """
SELECT wallet_id FROM billing_hold WHERE wallet_id = ANY(%s::uuid[]) AND context = 'cloud'
ORDER BY wallet_id FOR NO KEY UPDATE
"""

SETTLE_CHARGES = """
INSERT INTO cloud_charge (id, wallet_id, owner_id, amount, currency, description, subject_id, period_start,
                          period_end, transaction_date, created_at, refunded_amount, ledger_entry_id)
SELECT t.id, t.wallet_id, t.owner_id, t.amount, t.currency, t.description, t.subject_id, t.period_start,
       t.period_end, t.period_end, %s, 0, t.entry_id
FROM unnest(%s::uuid[], %s::uuid[], %s::int[], %s::bigint[], %s::text[], %s::text[], %s::uuid[],
            %s::timestamptz[], %s::timestamptz[], %s::uuid[])
     AS t(id, wallet_id, owner_id, amount, currency, description, subject_id, period_start, period_end,
          entry_id)
"""

SETTLE_CLOSE = """
UPDATE cloud_usage u
SET closed_amount = u.amount, closed_hours = u.hours, closed_until = u.accrued_until, close_due_at = NULL,
    updated_at = %s
WHERE u.id = ANY(%s::bigint[])
"""

SETTLE_LEDGER = """
INSERT INTO billing_ledgerentry (id, wallet_id, sequence, kind, amount, balance_after, transaction_date,
                                 posted_at, description, reference, context, source_id, created_by_id)
SELECT t.id, t.wallet_id, t.sequence, 'charge', -t.total, t.balance_after, t.transaction_date, %s,
       'Cloud usage (' || t.charges || ' charges)', 'charges:' || t.source_id, 'cloud', t.source_id, NULL
FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::bigint[], %s::bigint[], %s::timestamptz[], %s::int[],
            %s::uuid[])
     AS t(id, wallet_id, sequence, total, balance_after, transaction_date, charges, source_id)
"""

SETTLE_WALLET_UPDATE = """
UPDATE billing_wallet w
SET balance = w.balance - t.total, reserved = w.reserved - t.total, ledger_sequence = w.ledger_sequence + 1,
    updated_at = %s
FROM unnest(%s::uuid[], %s::bigint[]) AS t(id, total)
WHERE w.id = t.id
"""

SETTLE_HOLD_UPDATE = """
UPDATE billing_hold h
SET amount = h.amount - t.total, captured_total = h.captured_total + t.total
FROM unnest(%s::uuid[], %s::bigint[]) AS t(wallet_id, total)
WHERE h.wallet_id = t.wallet_id AND h.context = 'cloud'
"""

SETTLE_CAPTURES = """
INSERT INTO billing_reservation (id, wallet_id, context, kind, amount, source_id, ledger_entry_id, created_at)
SELECT gen_random_uuid(), t.wallet_id, 'cloud', 'capture', t.total, t.source_id, t.entry_id, %s
FROM unnest(%s::uuid[], %s::bigint[], %s::uuid[], %s::uuid[]) AS t(wallet_id, total, source_id, entry_id)
"""


# The design's other writes (ARCHITECTURE.md, protocol step 3), which the real run makes
# and the floor leaves out: each wallet's ChargesRecorded outbox row (its payload lists
# the charges), Billing's applied-once record per charge, a ChargeSettled outbox row per
# entry, both rows marked delivered, and each charge's entry recorded on it afterwards.
#
# An event's outbox rows from arrays, their JSON payloads built by the worker (faster
# than jsonb_build_object over every charge in SQL: 0.7 s against 2.4 s at 100,000).
SETTLE_OUTBOX_ROWS = """
INSERT INTO contracts_outboxmessage (event_id, event_type, handler, payload, wallet_id, created_at,
                                     available_at, status, attempts, last_error)
SELECT t.event_id, %s, %s, t.payload::jsonb, t.wallet_id, %s, %s, 'pending', 0, ''
FROM unnest(%s::uuid[], %s::text[], %s::uuid[]) AS t(event_id, payload, wallet_id)
RETURNING id
"""

SETTLE_APPLIED_ONCE = """
INSERT INTO billing_settledcharge (charge_id, wallet_id, context, amount, currency, subject_id, description,
                                   period_start, period_end, transaction_date, ledger_entry_id, created_at)
SELECT t.id, t.wallet_id, 'cloud', t.amount, t.currency, t.subject_id, t.description, t.period_start,
       t.period_end, t.period_start, t.entry_id, %s
FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::text[], %s::uuid[], %s::text[], %s::timestamptz[],
            %s::timestamptz[], %s::uuid[])
     AS t(id, wallet_id, amount, currency, subject_id, description, period_start, period_end, entry_id)
"""

SETTLE_ENTRY_ON_CHARGES = """
UPDATE cloud_charge c SET ledger_entry_id = t.entry_id
FROM unnest(%s::uuid[], %s::uuid[]) AS t(id, entry_id)
WHERE c.id = t.id
"""

SETTLE_EVENTS_DELIVERED = """
UPDATE contracts_outboxmessage SET status = 'done', attempts = attempts + 1, delivered_at = %s
WHERE id = ANY(%s::bigint[])
"""


class RawSettle(RawWorker):
    # False: the floor (no outbox rows, one capture per entry and no applied-once record
    # per charge, each charge born with its entry), as the baseline was until 30 Nov 2026.
    same_writes = True

    def batch(self, last):
        now = self.now
        rows = self.next_batch("usage records", SETTLE_SELECT, "u.wallet_id", last, wallet_at=2)
        if not rows:
            return None
        by_wallet = defaultdict(list)
        for row in rows:
            by_wallet[row[2]].append(row)
        paying = sorted(w for w, items in by_wallet.items() if any(r[5] > 0 for r in items))
        wallets = {}
        if paying:
            wallets = {
                w: (balance, seq)
                for w, balance, seq in self.execute("wallets", SETTLE_WALLETS, [paying]).fetchall()
            }
            if wallets:
                self.execute("holds", SETTLE_HOLDS, [sorted(wallets)])
        charges, closed, entries = [], [], []
        for wallet_id, items in by_wallet.items():
            if wallet_id in paying and wallet_id not in wallets:
                self.tally["busy"] += len(items)  # Billing's side is busy: the whole wallet waits
                continue
            closed += [r[0] for r in items]
            self.tally["closed"] += len(items)
            open_items = [r for r in items if r[5] > 0]
            if not open_items:
                continue
            balance, sequence = wallets[wallet_id]
            total = sum(r[5] for r in open_items)
            entry_id, source_id = uuid.uuid4(), uuid.uuid4()
            for _usage_id, service_id, _, owner_id, currency, amount, start, end, month in open_items:
                charges.append(
                    (
                        uuid.uuid4(),
                        wallet_id,
                        owner_id,
                        amount,
                        currency,
                        f"Server usage {month:%Y-%m}",
                        service_id,
                        start,
                        end,
                        entry_id,
                    )
                )
            entries.append(
                (
                    entry_id,
                    wallet_id,
                    sequence + 1,
                    total,
                    balance - total,
                    max(r[7] for r in open_items),
                    len(open_items),
                    source_id,
                )
            )
        if charges:
            charge_columns = list(map(list, zip(*charges, strict=True)))
            entry_of_charge = charge_columns[-1]
            if self.same_writes:  # the entry is recorded on the charges once Billing booked it
                charge_columns[-1] = [None] * len(charges)
            self.execute("charges", SETTLE_CHARGES, [now, *charge_columns])
            self.tally["charges"] += len(charges)
            if self.same_writes:
                events = self._outbox_rows(
                    "outbox: charges recorded",
                    "ChargesRecorded",
                    "billing.settle_recorded_charges",
                    _recorded_payloads(charge_columns, now),
                )
        if closed:
            self.execute("usage closed", SETTLE_CLOSE, [now, closed])
        if entries:
            columns = list(map(list, zip(*entries, strict=True)))
            self.execute("ledger entries", SETTLE_LEDGER, [now, *columns])
            ids, totals = columns[1], columns[3]
            self.execute("wallet update", SETTLE_WALLET_UPDATE, [now, ids, totals])
            self.execute("hold update", SETTLE_HOLD_UPDATE, [ids, totals])
            self.execute("captures", SETTLE_CAPTURES, [now, ids, totals, columns[7], columns[0]])
            if self.same_writes:
                self._design_writes(now, charge_columns, entry_of_charge, events)
            self.tally["wallets"] += len(entries)
            self.tally["amount"] += sum(totals)
        return rows[-1][2], rows[-1][1]

    def _design_writes(self, now, charge_columns, entry_of_charge, recorded_events) -> None:
        """Billing's applied-once records, the ChargeSettled rows, the charges' entry and
        both kinds of rows marked delivered (see SETTLE_OUTBOX_ROWS)."""
        ids, wallets, amounts, currencies = (
            charge_columns[0],
            charge_columns[1],
            charge_columns[3],
            charge_columns[4],
        )
        descriptions, subjects, starts, ends = charge_columns[5:9]
        self.execute(
            "applied-once records",
            SETTLE_APPLIED_ONCE,
            [now, ids, wallets, amounts, currencies, subjects, descriptions, starts, ends, entry_of_charge],
        )
        settled_events = self._outbox_rows(
            "outbox: charges settled",
            "ChargeSettled",
            "cloud.record_settlement",
            _settled_payloads(ids, wallets, entry_of_charge, now),
        )
        self.execute("entry on charges", SETTLE_ENTRY_ON_CHARGES, [ids, entry_of_charge])
        delivered = [row[0] for row in recorded_events + settled_events]
        self.execute("outbox delivered", SETTLE_EVENTS_DELIVERED, [now, delivered])

    def _outbox_rows(self, label: str, event_type: str, handler: str, payloads: list[tuple]) -> list:
        """Insert one pending outbox row per (wallet, payload); their ids."""
        wallets, texts = zip(*payloads, strict=True)
        event_ids = [uuid.uuid4() for _ in payloads]
        return self.execute(
            label,
            SETTLE_OUTBOX_ROWS,
            [event_type, handler, self.now, self.now, event_ids, list(texts), list(wallets)],
        ).fetchall()


def _recorded_payloads(charge_columns: list[list], now: dt.datetime) -> list[tuple]:
    """Each wallet's ChargesRecorded payload as the app writes it (iaas.contracts.events)."""
    ids, wallets, _, amounts, currencies, descriptions, subjects, starts, ends = charge_columns[:9]
    by_wallet: dict = defaultdict(list)
    for i, wallet in enumerate(wallets):
        by_wallet[wallet].append(i)
    payloads = []
    for wallet, rows in by_wallet.items():
        charges = [
            {
                "charge_id": str(ids[i]),
                "amount": amounts[i],
                "transaction_date": starts[i].isoformat(),
                "description": descriptions[i],
                "subject_id": str(subjects[i]),
                "period_start": starts[i].isoformat(),
                "period_end": ends[i].isoformat(),
            }
            for i in rows
        ]
        payload = {
            "event_id": str(uuid.uuid4()),
            "occurred_at": now.isoformat(),
            "wallet_id": str(wallet),
            "context": "cloud",
            "currency": currencies[rows[0]],
            "amount": sum(amounts[i] for i in rows),
            "charges": charges,
        }
        payloads.append((wallet, json.dumps(payload)))
    return payloads


def _settled_payloads(ids: list, wallets: list, entries: list, now: dt.datetime) -> list[tuple]:
    """One ChargeSettled payload per entry, listing its charges."""
    by_entry: dict = {}
    for charge_id, wallet, entry in zip(ids, wallets, entries, strict=True):
        by_entry.setdefault(entry, (wallet, []))[1].append(str(charge_id))
    return [
        (
            wallet,
            json.dumps(
                {
                    "event_id": str(uuid.uuid4()),
                    "occurred_at": now.isoformat(),
                    "wallet_id": str(wallet),
                    "context": "cloud",
                    "ledger_entry_id": str(entry),
                    "charge_ids": charge_ids,
                }
            ),
        )
        for entry, (wallet, charge_ids) in by_entry.items()
    ]


def _raw_worker(kind: str, database: str, part: int, parts: int, now: dt.datetime, batch_size: int, results):
    try:
        worker = (RawHourly if kind == "hourly" else RawSettle)(database, part, parts, now, batch_size)
        if kind == "settle-floor":
            worker.same_writes = False
        worker.walk(worker.batch)
        worker.conn.close()
        results.put((part, None, dict(worker.tally)))
    except BaseException:
        results.put((part, traceback.format_exc(), {}))


def run_raw(kind: str, database: str, *, workers: int, now: dt.datetime, batch_size: int) -> dict:
    """N baseline processes at once, one partition each; timed from launch to the last exit
    (as a command is)."""
    results = SPAWN.Queue()
    started = time.perf_counter()
    procs = [
        SPAWN.Process(target=_raw_worker, args=(kind, database, p, workers, now, batch_size, results))
        for p in range(workers)
    ]
    for proc in procs:
        proc.start()
    collected = []
    while len(collected) < len(procs):
        try:
            collected.append(results.get(timeout=1))
        except queue.Empty:
            if not any(proc.is_alive() for proc in procs):  # died without a word
                collected += [results.get(timeout=1) for _ in range(results.qsize())]
                if len(collected) < len(procs):
                    raise RuntimeError(
                        f"raw {kind}: a worker died (exit codes {[p.exitcode for p in procs]})"
                    ) from None
    for proc in procs:
        proc.join()
    wall = time.perf_counter() - started
    failures = [f for _, f, _ in collected if f]
    if failures:
        raise RuntimeError(f"raw {kind} worker failed:\n{failures[0]}")
    tally: Counter[str] = Counter()
    for _, _, t in collected:
        tally.update({k: v for k, v in t.items() if k != "work_ms"})
    tally = Counter({k: round(v) if k.startswith("ms ") else v for k, v in tally.items()})
    return {
        "wall_s": round(wall, 3),
        "work_s": round(max(t["work_ms"] for _, _, t in collected) / 1000, 3),
        "tally": dict(tally),
        "statements_per_batch": (
            round((tally["statements"] - tally["pass_end_statements"]) / tally["batches"], 2)
            if tally["batches"]
            else None
        ),
    }


# --- the real commands ---------------------------------------------------------------------------


def command_env(database: str) -> dict:
    env = {**os.environ, "DATABASE_URL": db_url(database), "PYTHONDONTWRITEBYTECODE": "1"}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "iaas.settings.base",
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
            "IAAS_DELIVER_ON_COMMIT": "0",
            "IAAS_STATEMENT_TIMEOUT_MS": "0",  # reconcile over a million rows takes longer than 30 s
        }
    )
    return env


def manage(database: str, *args: str, timeout: float = 7200) -> tuple[float, int, str, str]:
    """Run ``manage.py <args>`` against ``database``: (seconds, exit code, stdout, stderr)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=APP_DIR,
        env=command_env(database),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return time.perf_counter() - started, done.returncode, done.stdout, done.stderr


def parse_json(stdout: str) -> dict:
    """The last JSON object a command printed (a command may log before it)."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        start = text.rfind("\n{")
        return json.loads(text[start + 1 :]) if start >= 0 else {}


def real_commands_missing(database: str) -> list[str]:
    """What the real runs need and this checkout does not have (empty: all there)."""
    missing = []
    for command, option in (
        ("bill_usage", "--workers"),
        ("settle_usage", "--workers"),
        ("deliver_events", "--json"),
    ):
        _, code, out, err = manage(database, "help", command, timeout=120)
        if code != 0:
            missing.append(
                f"manage.py {command} does not exist ({err.strip().splitlines()[-1] if err else code})"
            )
        elif option not in out:
            missing.append(f"manage.py {command} has no {option} option")
    return missing


def startup_seconds(database: str) -> float:
    """A management command's start-up (interpreter, Django, the app registry): what the
    real runs pay before their first batch, measured as ``bill_usage --help``."""
    return round(min(manage(database, "bill_usage", "--help", timeout=120)[0] for _ in range(2)), 3)


def run_real_hourly(database: str, *, workers: int) -> dict:
    seconds, code, out, err = manage(database, "bill_usage", "--workers", str(workers), "--json")
    if code not in (0,):
        log(f"bill_usage exited {code}: {err.strip()[-2000:]}")
    summary = parse_json(out) if out.strip() else {}
    return {"wall_s": round(seconds, 3), "exit_code": code, "summary": summary, "stderr": err.strip()[-2000:]}


def deliver_all(database: str, *, workers: int, batch_size: int = 1000, rounds: int = 50) -> dict:
    """N ``deliver_events`` at once, again until every outbox row older than the pass is
    delivered (or a pass delivers nothing). Rows the purchase probe adds meanwhile do not
    keep it going: only what was there when a pass started must be gone after it."""
    delivered = failed = passes = 0
    started = time.perf_counter()
    left = None
    for _ in range(rounds):
        passes += 1
        with connect(database, autocommit=True) as conn:
            (pass_started,) = conn.execute("SELECT clock_timestamp()").fetchone()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outs = list(
                pool.map(
                    lambda _: manage(database, "deliver_events", "--batch-size", str(batch_size), "--json"),
                    range(workers),
                )
            )
        got = [parse_json(o[2]) if o[2].strip() else {} for o in outs]
        round_delivered = sum(g.get("delivered", 0) for g in got)
        delivered += round_delivered
        failed += sum(g.get("failed", 0) for g in got)
        with connect(database, autocommit=True) as conn:
            (left,) = conn.execute(
                "SELECT count(*) FROM contracts_outboxmessage WHERE status <> 'done' AND created_at < %s",
                [pass_started],
            ).fetchone()
        if not left or not round_delivered:
            break
    return {
        "wall_s": round(time.perf_counter() - started, 3),
        "delivered": delivered,
        "failed": failed,
        "left_from_before": left,
        "passes": passes,
    }


def run_real_settle(database: str, *, workers: int) -> dict:
    seconds, code, out, err = manage(database, "settle_usage", "--workers", str(workers), "--json")
    if code != 0:
        log(f"settle_usage exited {code}: {err.strip()[-2000:]}")
    summary = parse_json(out) if out.strip() else {}
    delivery = deliver_all(database, workers=workers)
    return {
        "wall_s": round(seconds + delivery["wall_s"], 3),
        "settle_s": round(seconds, 3),
        "deliver": delivery,
        "exit_code": code,
        "summary": summary,
        "stderr": err.strip()[-2000:],
    }


def reconcile_command(database: str) -> dict:
    """``manage.py reconcile --json``: its exit code, which invariants failed, whether it
    checks I11, and, when only I4 fails on wallets with accrued usage while the bench's
    own check (I4 with the accrued term) is clean, that it lacks that term."""
    seconds, code, out, err = manage(database, "reconcile", "--json")
    report = parse_json(out) if out.strip() else {}
    invariants = report.get("invariants", {})
    failed = sorted(name for name, item in invariants.items() if not item.get("ok"))
    result = {
        "exit_code": code,
        "ok": code == 0 and bool(report.get("ok")),
        "seconds": round(seconds, 1),
        "failed": failed,
        "violations": {name: len(invariants[name].get("violations", [])) for name in failed},
        "checks_i11": "I11" in invariants,
        "i11_ok": invariants.get("I11", {}).get("ok"),
        "stuck_events": len(report.get("stuck_events", [])),
    }
    if not report:
        result["error"] = (err or out).strip()[-2000:]
    if not result["ok"] and failed == ["I4"] and not result["stuck_events"]:
        wallets = {v.get("wallet_id") for v in invariants["I4"]["violations"]}
        with connect(database) as conn:
            accruing = {
                str(w)
                for (w,) in conn.execute(
                    "SELECT DISTINCT wallet_id FROM cloud_usage WHERE amount > closed_amount"
                ).fetchall()
            }
        result["only_accrued_term_missing"] = wallets <= accruing
    return result


# --- measurements around a run -----------------------------------------------------------------

STATS = """
SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, pg_total_relation_size(relid)
FROM pg_stat_user_tables
"""


def snapshot(database: str) -> dict:
    with connect(database, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        tables = {r[0]: r[1:] for r in conn.execute(STATS).fetchall()}
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, deadlocks, tup_inserted, tup_updated "
            "FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return {"tables": tables, "lsn": lsn, "size": size, "db": row}


def stats_delta(before: dict, after: dict, database: str) -> dict:
    with connect(database, autocommit=True) as conn:
        (wal,) = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", [after["lsn"], before["lsn"]]).fetchone()
    inserted, updated, hot, grown = {}, {}, {}, {}
    for name, (ins, upd, hot_upd, size) in after["tables"].items():
        b = before["tables"].get(name, (0, 0, 0, 0))
        if ins - b[0]:
            inserted[name] = ins - b[0]
        if upd - b[1]:
            updated[name] = upd - b[1]
            hot[name] = hot_upd - b[2]
        if size - b[3]:
            grown[name] = size - b[3]
    return {
        "rows_inserted": inserted,
        "rows_updated": updated,
        "hot_updates": hot,
        "table_growth_bytes": grown,
        "wal_bytes": int(wal),
        "database_growth_bytes": after["size"] - before["size"],
        "commits": after["db"][0] - before["db"][0],
        "rollbacks": after["db"][1] - before["db"][1],
        "deadlocks": after["db"][2] - before["db"][2],
    }


def counts(database: str, *, since: dt.datetime | None = None) -> dict:
    with connect(database) as conn:
        return dict(
            zip(
                ("active_due", "active", "suspended", "usage_due", "cloud_charges", "cloud_entries"),
                conn.execute(
                    """
                    SELECT count(*) FILTER (WHERE status = 'active' AND paid_until < now()),
                           count(*) FILTER (WHERE status = 'active'),
                           count(*) FILTER (WHERE status = 'suspended'),
                           (SELECT count(*) FROM cloud_usage WHERE close_due_at <= now()),
                           (SELECT count(*) FROM cloud_charge),
                           (SELECT count(*) FROM billing_ledgerentry
                            WHERE context = 'cloud' AND kind = 'charge')
                    FROM cloud_server
                    """
                ).fetchone(),
                strict=True,
            )
        )


# --- purchases while a run goes on ----------------------------------------------------------------


def _purchase_probe(
    app_dir: str, database: str, wallets: list, rate: float, ready, go, stop, results
) -> None:
    """Buy servers (the real purchase service) on random paying wallets, paced to ``rate``
    a second, until told to stop; report latencies, errors and the rows the purchases
    inserted (per table, from each INSERT's row count), so the run's own inserts can be
    told from theirs."""
    try:
        from .common import django_setup

        sys.path.insert(0, app_dir)  # the app under test's iaas package, not necessarily ours
        sys.dont_write_bytecode = True  # nothing written into another checkout
        django_setup(database, {"IAAS_DELIVER_ON_COMMIT": "0"})
        from django.db import connection

        from iaas.cloud import services

        inserted: Counter[str] = Counter()

        def count_inserts(execute, sql, params, many, context):
            result = execute(sql, params, many, context)
            parts = sql.upper().split("INSERT INTO")[1:]
            tables = [part.split()[0].strip('"').lower() for part in parts]
            if len(tables) == 1 and sql.lstrip().upper().startswith("INSERT INTO"):
                inserted[tables[0]] += max(context["cursor"].rowcount, 0)
            else:
                # A purchase's folded statement (iaas.contracts.statements): one row into
                # each table it names (the service, the charge, its event, the usage record).
                for table in tables:
                    inserted[table] += 1
            return result

        rng = random.Random(database)
        pairs = [(owner, uuid.UUID(wallet)) for owner, wallet in wallets]

        def buy(n):
            owner, wallet = rng.choice(pairs)
            services.server_create(owner_id=owner, wallet_id=wallet, name=f"probe-{n}", plan_id=PURCHASE_PLAN)

        with connection.execute_wrapper(count_inserts):
            for n in range(2):
                buy(-1 - n)
            inserted.clear()
            # The warm-up's statistics go to the server now, before the run's first
            # snapshot (a backend flushes them when idle, at most once a second, else later).
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_stat_force_next_flush()")
            time.sleep(0.3)
            ready.set()
            go.wait()
            latencies, errors = [], Counter()
            interval = 1 / rate
            next_at = time.perf_counter()
            n = 0
            while not stop.is_set():
                at, t0 = time.time(), time.perf_counter()
                try:
                    buy(n)
                except Exception as error:  # counted, not timed
                    errors[type(error).__name__] += 1
                else:
                    latencies.append((at, time.perf_counter() - t0))
                n += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.perf_counter()))
        connection.close()
        results.put((None, latencies, dict(errors), dict(inserted)))
    except BaseException:
        ready.set()
        results.put((traceback.format_exc(), [], {}, {}))


class PurchaseProbe:
    def __init__(self, database: str, wallets: list, rate: float) -> None:
        self.ready, self.go, self.stop = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
        self.results = SPAWN.Queue()
        self.proc = SPAWN.Process(
            target=_purchase_probe,
            args=(str(APP_DIR), database, wallets, rate, self.ready, self.go, self.stop, self.results),
            daemon=True,
        )
        self.proc.start()
        self.ready.wait(timeout=120)

    def start(self) -> None:
        self.go.set()

    def finish(self, *, run_started: float) -> dict:
        """Stop; the purchases started before ``run_started`` (time.time()) were made with
        no run going (the same machine a moment before), the others while it went on."""
        self.stop.set()
        failure, timed, errors, inserted = self.results.get(timeout=120)
        self.proc.join(timeout=30)
        if failure:
            raise RuntimeError(f"purchase probe failed:\n{failure}")
        during = sorted(lat for at, lat in timed if at >= run_started)
        idle = sorted(lat for at, lat in timed if at < run_started)

        def ms(values, q):
            return round(percentile(values, q) * 1000, 2) if values else None

        return {
            "purchases": len(during),
            "p50_ms": ms(during, 50),
            "p99_ms": ms(during, 99),
            "idle_purchases": len(idle),
            "idle_p50_ms": ms(idle, 50),
            "idle_p99_ms": ms(idle, 99),
            "errors": errors,
            "rows_inserted": inserted,
        }


def paying_wallets(database: str, limit: int = 1000) -> list:
    with connect(database) as conn:
        rows = conn.execute(
            "SELECT owner_id, wallet_id::text FROM cloud_allowance WHERE amount > 0 "
            "ORDER BY md5(wallet_id::text) LIMIT %s",
            [limit],
        ).fetchall()
    return [list(r) for r in rows]


def timed_phase(database: str, run, *, probe_rate: float, probe_idle: float = PROBE_IDLE_S) -> dict:
    """Run ``run()`` (a timed run) with the purchase probe beside it, and the database's
    statistics taken around it (after every process of the run has exited)."""
    probe = PurchaseProbe(database, paying_wallets(database), probe_rate) if probe_rate else None
    before = snapshot(database)
    if probe:
        probe.start()
        time.sleep(probe_idle)  # purchases with no run going: what the run's figures compare with
    run_started = time.time()
    result = run()
    purchases = probe.finish(run_started=run_started) if probe else None
    time.sleep(1.0)  # backends flush their statistics as they exit
    result["stats"] = stats_delta(before, snapshot(database), database)
    result["purchases"] = purchases
    inserted = dict(result["stats"]["rows_inserted"])
    for table, rows in (purchases or {}).get("rows_inserted", {}).items():
        inserted[table] = inserted.get(table, 0) - rows
    result["rows_inserted_by_run"] = {t: n for t, n in inserted.items() if n}
    return result


# --- one run: seed, gate, hourly, settlement, checks ------------------------------------------------


def one_run(kind: str, workers: int, args, startup_s: float | None) -> dict:
    """``kind`` (raw or real) at ``workers`` workers on a fresh seed."""
    recreate_database(DATABASE, template=common.TEMPLATE_DB)
    log(f"{kind} x{workers}: seeding {args.servers:,} servers on {args.wallets:,} wallets")
    seeded = seed(DATABASE, servers=args.servers, wallets=args.wallets, fillfactor=args.fillfactor)
    log(f"  seeded in {seeded['seed_s']} s (+ vacuum analyze {seeded['vacuum_s']} s): {seeded['steps_s']}")
    gate = books_check(DATABASE)
    if not gate["ok"]:
        raise SystemExit(f"the seed's books do not agree (a bug in the seed): {gate}")
    seed_reconcile = reconcile_command(DATABASE) if args.reconcile_seed else None
    if seed_reconcile:
        log(f"  seed: books {'ok' if gate['ok'] else 'FAILED'}, reconcile {_reconcile_word(seed_reconcile)}")
        if not seed_reconcile["ok"] and not seed_reconcile.get("only_accrued_term_missing"):
            raise SystemExit(f"reconcile is not clean on the seed: {seed_reconcile}")
    run = {
        "kind": kind,
        "workers": workers,
        "seed": seeded,
        "seed_books": gate,
        "seed_reconcile": seed_reconcile,
    }
    before = counts(DATABASE)

    # hourly
    def hourly_run():
        if kind == "raw":
            now = dt.datetime.now(UTC)
            return run_raw("hourly", DATABASE, workers=workers, now=now, batch_size=args.batch_size)
        return run_real_hourly(DATABASE, workers=workers)

    hourly = timed_phase(DATABASE, hourly_run, probe_rate=args.purchase_rate, probe_idle=args.probe_idle)
    after = counts(DATABASE)
    hourly["i11"] = books_check(DATABASE)["i11"]
    hourly["servers_charged"] = (
        before["active_due"] - after["active_due"] - (after["suspended"] - before["suspended"])
    )
    hourly["servers_suspended"] = after["suspended"] - before["suspended"]
    hourly["servers"] = hourly["servers_charged"] + hourly["servers_suspended"]
    hourly["left_due"] = after["active_due"]
    hourly["services_per_s"] = round(hourly["servers"] / hourly["wall_s"], 1) if hourly["wall_s"] else None
    if startup_s is not None and kind == "real":
        net = hourly["wall_s"] - startup_s
        hourly["services_per_s_net"] = round(hourly["servers"] / net, 1) if net > 0 else None
    log(
        f"  hourly: {hourly['servers']:,} servers ({hourly['servers_charged']:,} charged, "
        f"{hourly['servers_suspended']:,} suspended, {hourly['left_due']:,} left due) "
        f"in {hourly['wall_s']} s = {hourly['services_per_s']:,} /s; "
        f"inserted by the run {sum(hourly['rows_inserted_by_run'].values())} rows, "
        f"WAL {hourly['stats']['wal_bytes'] / 1e6:.1f} MB, purchases {_probe_words(hourly['purchases'])}, "
        f"I11 {_i11_word(hourly['i11'])}"
    )
    drained = deliver_all(DATABASE, workers=1)  # the purchases' charges, untimed

    # settlement
    before = counts(DATABASE)

    def settle_run():
        if kind == "raw":
            now = dt.datetime.now(UTC)
            settle_kind = "settle-floor" if args.raw_floor else "settle"
            return run_raw(settle_kind, DATABASE, workers=workers, now=now, batch_size=args.batch_size)
        return run_real_settle(DATABASE, workers=workers)

    settle = timed_phase(DATABASE, settle_run, probe_rate=args.purchase_rate, probe_idle=args.probe_idle)
    after = counts(DATABASE)
    settle["services"] = before["usage_due"] - after["usage_due"]
    settle["charges"] = settle["rows_inserted_by_run"].get("cloud_charge", 0)
    settle["ledger_entries"] = after["cloud_entries"] - before["cloud_entries"]
    settle["left_due"] = after["usage_due"]
    settle["services_per_s"] = round(settle["services"] / settle["wall_s"], 1) if settle["wall_s"] else None
    log(
        f"  settlement: {settle['services']:,} usage records closed into {settle['charges']:,} charges, "
        f"{settle['ledger_entries']:,} ledger entries in {settle['wall_s']} s "
        f"= {settle['services_per_s']:,} /s; "
        f"purchases {_probe_words(settle['purchases'])}"
    )
    drained_after = deliver_all(DATABASE, workers=1)
    books = books_check(DATABASE)
    final = reconcile_command(DATABASE)
    log(
        f"  end: books {'ok' if books['ok'] else 'FAILED ' + json.dumps(books)}, "
        f"reconcile {_reconcile_word(final)}"
    )
    run.update(
        {
            "hourly": hourly,
            "settle": settle,
            "drained": [drained, drained_after],
            "books": books,
            "reconcile": final,
        }
    )
    return run


def _probe_words(p: dict | None) -> str:
    if not p:
        return "off"
    return (
        f"{p['purchases']} p50 {p['p50_ms']} ms p99 {p['p99_ms']} ms errors {p['errors'] or 0} "
        f"(before the run: p50 {p['idle_p50_ms']} ms p99 {p['idle_p99_ms']} ms)"
    )


def _i11_word(i11: dict) -> str:
    bad = {k: v for k, v in i11.items() if k not in ("servers", "active", "suspended") and v}
    return f"ok over {i11['servers']:,} servers" if not bad else f"VIOLATED {bad}"


def _reconcile_word(r: dict) -> str:
    if r["ok"]:
        return f"clean (exit 0{', I11 checked' if r['checks_i11'] else ', no I11 check yet'})"
    if r.get("only_accrued_term_missing"):
        return (
            f"exit {r['exit_code']}: only I4 on wallets with accrued usage ({r['violations']}): "
            "this reconcile lacks I4's accrued term"
        )
    return f"FAILED exit {r['exit_code']} {r['failed']} {r['violations']} {r.get('error', '')}"


# --- report -----------------------------------------------------------------------------------------


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (phase, kind, workers), with the ratio real/raw at the same workers."""
    rows = []
    for phase in ("hourly", "settle"):
        for run in runs:
            p = run[phase]
            row = {
                "phase": phase,
                "kind": run["kind"],
                "workers": run["workers"],
                "services": p["servers"] if phase == "hourly" else p["services"],
                "seconds": p["wall_s"],
                "services_per_s": p["services_per_s"],
                "net_per_s": p.get("services_per_s_net"),
                "rows_inserted": sum(p["rows_inserted_by_run"].values()),
                "wal_mb": round(p["stats"]["wal_bytes"] / 1e6, 1),
                "db_growth_mb": round(p["stats"]["database_growth_bytes"] / 1e6, 1),
                "statements_per_batch": _statements(run, phase),
                "p50_ms": (p.get("purchases") or {}).get("p50_ms"),
                "p99_ms": (p.get("purchases") or {}).get("p99_ms"),
                "idle_p50_ms": (p.get("purchases") or {}).get("idle_p50_ms"),
                "idle_p99_ms": (p.get("purchases") or {}).get("idle_p99_ms"),
                "i11": _i11_word(p["i11"]) if phase == "hourly" else "",
                "reconcile": "ok" if run["reconcile"]["ok"] else _reconcile_word(run["reconcile"]),
                "books": "ok" if run["books"]["ok"] else "FAILED",
            }
            rows.append(row)
    for row in rows:
        if row["kind"] == "real":
            base = next(
                (
                    r
                    for r in rows
                    if r["kind"] == "raw" and r["phase"] == row["phase"] and r["workers"] == row["workers"]
                ),
                None,
            )
            if base and base["services_per_s"]:
                row["ratio"] = round(row["services_per_s"] / base["services_per_s"], 3)
                if row["net_per_s"]:
                    row["ratio_net"] = round(row["net_per_s"] / base["services_per_s"], 3)
    return rows


def _statements(run: dict, phase: str):
    p = run[phase]
    if run["kind"] == "raw":
        return p["statements_per_batch"]
    summary = p.get("summary") or {}
    for key in ("statements_per_batch",):
        if key in summary:
            return summary[key]
    if summary.get("statements") and summary.get("batches"):
        return round(summary["statements"] / summary["batches"], 2)
    return None


def table(rows: list[dict]) -> str:
    lines = [
        "| run | workers | services | seconds | services/s | real/raw | rows inserted | WAL MB "
        "| DB growth MB | statements/batch | purchase p50 / p99 ms (before the run) | I11 | reconcile |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.0%}" if r.get("ratio") is not None else ""
        if r.get("ratio_net") is not None:
            ratio += f" ({r['ratio_net']:.0%} net of start-up)"
        probe = ""
        if r["p50_ms"] is not None:
            probe = f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f}"
            if r["idle_p50_ms"] is not None:
                probe += f" ({r['idle_p50_ms']:.0f} / {r['idle_p99_ms']:.0f})"
        lines.append(
            f"| {r['phase']} {r['kind']} | {r['workers']} | {r['services']:,} | {r['seconds']:.2f} | "
            f"{r['services_per_s']:,.0f} | {ratio} | {r['rows_inserted']:,} | {r['wal_mb']} | "
            f"{r['db_growth_mb']} | "
            f"{r['statements_per_batch'] if r['statements_per_batch'] is not None else 'n/a'} | {probe} | "
            f"{'ok' if r['i11'].startswith('ok') else r['i11']} | {r['reconcile']} |"
        )
    return "\n".join(lines)


def chart(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, phase, label in zip(axes, ("hourly", "settle"), ("hourly run", "settlement run"), strict=True):
        items = [r for r in rows if r["phase"] == phase]
        workers = sorted({r["workers"] for r in items})
        width = 0.38
        for offset, kind, color in ((-width / 2, "raw", "#9aa7b1"), (width / 2, "real", "#2f6db5")):
            if not any(r["kind"] == kind for r in items):
                continue
            xs = [i + offset for i, w in enumerate(workers)]
            ys = [
                next((r["services_per_s"] for r in items if r["kind"] == kind and r["workers"] == w), 0)
                for w in workers
            ]
            bars = axis.bar(
                xs, ys, width, label="raw SQL, same design" if kind == "raw" else "real command", color=color
            )
            for bar, w in zip(bars, workers, strict=True):
                r = next((r for r in items if r["kind"] == kind and r["workers"] == w), None)
                if r and kind == "real" and r.get("ratio") is not None:
                    axis.annotate(
                        f"{r['ratio']:.0%}",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=8,
                    )
        axis.set_xticks(range(len(workers)), [f"{w} worker{'s' if w > 1 else ''}" for w in workers])
        axis.set_ylabel("services a second")
        axis.set_title(label)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a tenth: 10,000 servers on 2,000 wallets")
    parser.add_argument(
        "--app-dir", type=Path, default=ROOT, help="the checkout whose commands to time (read-only)"
    )
    parser.add_argument("--servers", type=int)
    parser.add_argument("--wallets", type=int)
    parser.add_argument("--workers", default="1,2", help="numbers of workers, comma-separated")
    parser.add_argument("--only", default="raw,real", help="raw, real or both")
    parser.add_argument(
        "--raw-floor",
        action="store_true",
        help="the settlement baseline without the design's outbox rows, applied-once records per "
        "charge and the charges' entry recorded afterwards (a floor, not the same writes)",
    )
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="the raw baseline's batch")
    parser.add_argument(
        "--purchase-rate", type=float, default=10.0, help="purchases a second while a run goes on (0: none)"
    )
    parser.add_argument(
        "--probe-idle",
        type=float,
        default=PROBE_IDLE_S,
        help="seconds of purchases before each run starts, for comparison",
    )
    parser.add_argument(
        "--fillfactor",
        type=int,
        help="EXPERIMENT: seed the servers and usage records with this fillfactor (room for HOT updates)",
    )
    parser.add_argument(
        "--no-reconcile-seed", dest="reconcile_seed", action="store_false", help="skip reconcile on each seed"
    )
    parser.add_argument(
        "--chart", default=str(RESULTS / "metering.png"), help="where the PNG goes ('' for none)"
    )
    args = parser.parse_args(argv)
    args.servers = args.servers or (10_000 if args.quick else 100_000)
    args.wallets = args.wallets or (2_000 if args.quick else 20_000)
    if args.servers < args.wallets:
        parser.error("at least one server per wallet")
    kinds = [k for k in ("raw", "real") if k in args.only.split(",")]
    workers_list = [int(w) for w in args.workers.split(",")]
    global APP_DIR
    APP_DIR = args.app_dir.resolve()
    started = time.time()
    info = machine()
    log(f"machine: {info}")
    migrate_template(app_dir=APP_DIR)
    startup_s = None
    if "real" in kinds:
        recreate_database(DATABASE, template=common.TEMPLATE_DB)
        missing = real_commands_missing(DATABASE)
        if missing:
            log("the real commands are not there yet: " + "; ".join(missing))
            log("run the baseline alone with --only raw")
            return 2
        startup_s = startup_seconds(DATABASE)
        log(f"a management command's start-up: {startup_s} s")
    runs = []
    for workers in workers_list:
        for kind in kinds:
            runs.append(one_run(kind, workers, args, startup_s))
    rows = summarise(runs)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"metering-{stamp}.json"
    failures = [
        f"{r['kind']} x{r['workers']}"
        for r in runs
        if not r["books"]["ok"]
        or not r["hourly"]["i11"]
        or any(v for k, v in r["hourly"]["i11"].items() if k not in ("servers", "active", "suspended"))
        or not (r["reconcile"]["ok"] or r["reconcile"].get("only_accrued_term_missing"))
        or r["hourly"].get("exit_code", 0) != 0
        or r["settle"].get("exit_code", 0) != 0
    ]
    write_json(
        out,
        {
            "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
            "elapsed_s": round(time.time() - started, 1),
            "servers": args.servers,
            "wallets": args.wallets,
            "batch_size": args.batch_size,
            "purchase_rate": args.purchase_rate,
            "fillfactor": args.fillfactor,
            "startup_s": startup_s,
            "app_dir": str(APP_DIR),
            "machine": info,
            "load_average_at_end": list(os.getloadavg()),
            "runs": runs,
            "rows": rows,
            "failures": failures,
        },
    )
    if args.chart and rows:
        chart(
            rows,
            Path(args.chart),
            f"{args.servers:,} servers on {args.wallets:,} wallets, batches of {args.batch_size:,}",
        )
    print()
    print(table(rows))
    log(f"results: {out}  chart: {args.chart or '-'}  ({time.time() - started:.0f} s)")
    if failures:
        log("FAILED (a command's exit code, books, I11 or reconcile): " + ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
