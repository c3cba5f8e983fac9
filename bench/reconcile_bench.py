"""Benchmark: reconcile over 100,000 wallets and 1,000,000 ledger entries against the
raw aggregate it cannot beat, ``SELECT wallet_id, sum(amount) ... GROUP BY wallet_id``,
timed in the same run over the same data. Goal: reconcile within 2x of the raw query.

Uses its own database (default iaas_bench_reconcile, dropped and recreated unless
--reuse), on the server of DATABASE_URL (default postgres://postgres@127.0.0.1:5432).
The data is loaded in bulk with INSERT ... SELECT generate_series and is consistent:
every invariant holds (reconcile must report no violation). Entries are interleaved in
time (every wallet gets its n-th entry before any gets its n+1-th), as in production.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/reconcile_bench.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
RAW_QUERY = "SELECT wallet_id, sum(amount) FROM billing_ledgerentry GROUP BY wallet_id"
# The same aggregate, its rows summed up in the server instead of sent to the client.
RAW_SERVER_SIDE = (
    "SELECT count(*), sum(total) FROM "
    "(SELECT wallet_id, sum(amount) AS total FROM billing_ledgerentry GROUP BY wallet_id) grouped"
)


def database_url(name: str) -> tuple[str, str]:
    """(URL of the bench database, URL of the maintenance database) on the same server."""
    base = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    return (urlunsplit(base._replace(path=f"/{name}")), urlunsplit(base._replace(path="/postgres")))


def recreate_database(maintenance_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def load(cursor, wallets: int, per_wallet: int) -> None:
    """One top-up then ``per_wallet - 1`` charges per wallet, alternately Cloud's and
    Hosting's, each settled (capture) out of a grant per context; Cloud keeps 50 cents of
    allowance (held by Billing), Hosting none. Every charge has its context's record and
    its delivered ChargeRecorded row in the outbox."""
    cloud_n = per_wallet // 2  # charges at even sequences 2, 4, ...
    hosting_n = per_wallet - 1 - cloud_n
    top_up = 200 * per_wallet + 1000
    leftover = 50
    params = {
        "w": wallets,
        "e": per_wallet,
        "t": top_up,
        "x": leftover,
        "kc": cloud_n,
        "kh": hosting_n,
    }
    c = "(10 + i %% 90)"  # a wallet's charge amount (%% escapes the placeholder sign)
    steps = [
        (
            "users",
            """INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name,
                   email, is_staff, is_active, date_joined)
               SELECT i, '!', false, 'bench' || i, '', '', '', false, true, now()
               FROM generate_series(1, %(w)s) i""",
        ),
        (
            "wallets",
            f"""INSERT INTO billing_wallet (id, owner_id, currency, status, balance, reserved,
                   ledger_sequence, created_at, updated_at)
               SELECT md5('wallet' || i)::uuid, i, 'EUR', 'active',
                      %(t)s - (%(e)s - 1) * {c}, %(x)s, %(e)s, now(), now()
               FROM generate_series(1, %(w)s) i""",
        ),
        (
            "ledger entries",
            f"""INSERT INTO billing_ledgerentry (id, wallet_id, sequence, kind, amount, balance_after,
                   transaction_date, posted_at, description, reference, context, source_id)
               SELECT md5('entry' || i || '-' || s)::uuid, md5('wallet' || i)::uuid, s,
                      CASE WHEN s = 1 THEN 'top_up' ELSE 'charge' END,
                      CASE WHEN s = 1 THEN %(t)s ELSE -{c} END,
                      %(t)s - (s - 1) * {c},
                      timestamptz '2026-01-01' + s * interval '1 hour',
                      timestamptz '2026-01-01' + s * interval '1 hour',
                      CASE WHEN s = 1 THEN 'Top-up via sandbox' ELSE 'bench usage' END,
                      CASE WHEN s = 1 THEN 'top-up:' || md5('topup' || i)::uuid
                           ELSE 'charge:' || md5('charge' || i || '-' || s)::uuid END,
                      CASE WHEN s = 1 THEN '' WHEN s %% 2 = 0 THEN 'cloud' ELSE 'hosting' END,
                      CASE WHEN s = 1 THEN md5('topup' || i)::uuid
                           ELSE md5('charge' || i || '-' || s)::uuid END
               FROM generate_series(1, %(e)s) s, generate_series(1, %(w)s) i""",
        ),
        (
            "settled charges",
            f"""INSERT INTO billing_settledcharge (charge_id, wallet_id, context, amount, currency,
                   description, transaction_date, ledger_entry_id, created_at)
               SELECT md5('charge' || i || '-' || s)::uuid, md5('wallet' || i)::uuid,
                      CASE WHEN s %% 2 = 0 THEN 'cloud' ELSE 'hosting' END, {c}, 'EUR', 'bench usage',
                      timestamptz '2026-01-01' + s * interval '1 hour', md5('entry' || i || '-' || s)::uuid,
                      timestamptz '2026-01-01' + s * interval '1 hour'
               FROM generate_series(2, %(e)s) s, generate_series(1, %(w)s) i""",
        ),
        (
            "top-ups",
            """INSERT INTO billing_topup (id, wallet_id, amount, currency, status, provider,
                   provider_reference, reference, created_at, completed_at, ledger_entry_id)
               SELECT md5('topup' || i)::uuid, md5('wallet' || i)::uuid, %(t)s, 'EUR', 'succeeded',
                      'sandbox', '', 'bench-' || i, timestamptz '2026-01-01', timestamptz '2026-01-01',
                      md5('entry' || i || '-1')::uuid
               FROM generate_series(1, %(w)s) i""",
        ),
        (
            "grants",
            f"""INSERT INTO billing_reservation (id, wallet_id, context, kind, amount, created_at)
               SELECT md5('grant' || ctx || i)::uuid, md5('wallet' || i)::uuid, ctx, 'grant',
                      CASE WHEN ctx = 'cloud' THEN %(kc)s * {c} + %(x)s ELSE %(kh)s * {c} END,
                      timestamptz '2026-01-01'
               FROM generate_series(1, %(w)s) i, (VALUES ('cloud'), ('hosting')) AS x(ctx)""",
        ),
        (
            "captures",
            f"""INSERT INTO billing_reservation (id, wallet_id, context, kind, amount, source_id,
                   ledger_entry_id, created_at)
               SELECT md5('capture' || i || '-' || s)::uuid, md5('wallet' || i)::uuid,
                      CASE WHEN s %% 2 = 0 THEN 'cloud' ELSE 'hosting' END, 'capture', {c},
                      md5('charge' || i || '-' || s)::uuid, md5('entry' || i || '-' || s)::uuid,
                      timestamptz '2026-01-01' + s * interval '1 hour'
               FROM generate_series(2, %(e)s) s, generate_series(1, %(w)s) i""",
        ),
        (
            "holds",
            f"""INSERT INTO billing_hold (wallet_id, context, amount, granted_total, captured_total,
                   released_total)
               SELECT md5('wallet' || i)::uuid, ctx, CASE WHEN ctx = 'cloud' THEN %(x)s ELSE 0 END,
                      CASE WHEN ctx = 'cloud' THEN %(kc)s * {c} + %(x)s ELSE %(kh)s * {c} END,
                      CASE WHEN ctx = 'cloud' THEN %(kc)s * {c} ELSE %(kh)s * {c} END, 0
               FROM generate_series(1, %(w)s) i, (VALUES ('cloud'), ('hosting')) AS x(ctx)""",
        ),
        (
            "allowances",
            f"""INSERT INTO cloud_allowance (wallet_id, owner_id, currency, amount, granted_total,
                   charged_total, released_total, created_at, last_used_at)
               SELECT md5('wallet' || i)::uuid, i, 'EUR', %(x)s, %(kc)s * {c} + %(x)s, %(kc)s * {c}, 0,
                      now(), now()
               FROM generate_series(1, %(w)s) i;
               INSERT INTO hosting_allowance (wallet_id, owner_id, currency, amount, granted_total,
                   charged_total, released_total, created_at, last_used_at)
               SELECT md5('wallet' || i)::uuid, i, 'EUR', 0, %(kh)s * {c}, %(kh)s * {c}, 0, now(), now()
               FROM generate_series(1, %(w)s) i""",
        ),
        (
            "context charges",
            f"""INSERT INTO cloud_charge (id, wallet_id, owner_id, amount, currency, description,
                   subject_id, period_start, period_end, transaction_date, created_at)
               SELECT md5('charge' || i || '-' || s)::uuid, md5('wallet' || i)::uuid, i, {c}, 'EUR',
                      'bench usage', md5('server' || i)::uuid,
                      timestamptz '2026-01-01' + s * interval '1 hour',
                      timestamptz '2026-01-01' + (s + 1) * interval '1 hour',
                      timestamptz '2026-01-01' + s * interval '1 hour', now()
               FROM generate_series(2, %(e)s, 2) s, generate_series(1, %(w)s) i;
               INSERT INTO hosting_charge (id, wallet_id, owner_id, amount, currency, description,
                   subject_id, period_start, period_end, transaction_date, created_at)
               SELECT md5('charge' || i || '-' || s)::uuid, md5('wallet' || i)::uuid, i, {c}, 'EUR',
                      'bench usage', md5('site' || i)::uuid,
                      timestamptz '2026-01-01' + s * interval '1 hour',
                      timestamptz '2026-01-01' + (s + 1) * interval '1 hour',
                      timestamptz '2026-01-01' + s * interval '1 hour', now()
               FROM generate_series(3, %(e)s, 2) s, generate_series(1, %(w)s) i""",
        ),
        (
            "outbox (delivered)",
            f"""INSERT INTO contracts_outboxmessage (event_id, event_type, handler, payload, wallet_id,
                   status, attempts, last_error, created_at, available_at, delivered_at)
               SELECT md5('event' || i || '-' || s)::uuid, 'ChargeRecorded',
                      'billing.settle_charge',
                      jsonb_build_object('charge_id', md5('charge' || i || '-' || s)::uuid,
                          'wallet_id', md5('wallet' || i)::uuid,
                          'context', CASE WHEN s %% 2 = 0 THEN 'cloud' ELSE 'hosting' END,
                          'amount', {c}, 'currency', 'EUR', 'description', 'bench usage'),
                      md5('wallet' || i)::uuid, 'done', 1, '',
                      timestamptz '2026-01-01' + s * interval '1 hour',
                      timestamptz '2026-01-01' + s * interval '1 hour',
                      timestamptz '2026-01-01' + s * interval '1 hour'
               FROM generate_series(2, %(e)s) s, generate_series(1, %(w)s) i""",
        ),
    ]
    for label, sql in steps:
        started = time.perf_counter()
        for statement in sql.split(";"):
            if statement.strip():
                cursor.execute(statement, params)
        print(f"  loaded {label:<20} {time.perf_counter() - started:6.1f} s", flush=True)


def timed(function, runs: int) -> tuple[float, object]:
    """Median wall time of ``runs`` runs after one warm-up run, and the last result."""
    result = function()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", default="iaas_bench_reconcile")
    parser.add_argument("--wallets", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each (after a warm-up)")
    parser.add_argument("--reuse", action="store_true", help="keep the loaded database, time only")
    args = parser.parse_args()
    if args.entries % args.wallets or args.entries // args.wallets < 3:
        parser.error("entries must be a multiple of wallets, at least 3 per wallet")
    if not args.database.startswith("iaas_bench"):
        parser.error("the benchmark database's name must start with iaas_bench")

    url, maintenance = database_url(args.database)
    if not args.reuse:
        recreate_database(maintenance, args.database)
    os.environ["DATABASE_URL"] = url
    os.environ["IAAS_STATEMENT_TIMEOUT_MS"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaas.settings.base")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    from iaas.operations.reconciliation import reconcile

    if not args.reuse:
        print(f"loading {args.wallets:,} wallets, {args.entries:,} ledger entries into {args.database}")
        call_command("migrate", verbosity=0)
        with connection.cursor() as cursor:
            load(cursor, args.wallets, args.entries // args.wallets)
        connection.close()
        with connection.cursor() as cursor:
            started = time.perf_counter()
            cursor.execute("VACUUM ANALYZE")
            print(f"  vacuum analyze {time.perf_counter() - started:16.1f} s")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM billing_wallet")
        (wallets,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM billing_ledgerentry")
        (entries,) = cursor.fetchone()

    def raw_query():
        # The same session settings reconcile gives itself (work_mem for in-memory
        # aggregates), so the two are compared on equal terms.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '256MB'")
            cursor.execute(RAW_QUERY)
            return len(cursor.fetchall())

    def raw_query_server_side():
        # The same aggregate with its rows counted in the server instead of sent to
        # Python: the database's share of the raw query, for a stricter comparison.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '256MB'")
            cursor.execute(RAW_SERVER_SIDE)
            return cursor.fetchone()[0]

    raw_seconds, groups = timed(raw_query, args.runs)
    server_seconds, _ = timed(raw_query_server_side, args.runs)
    reconcile_seconds, report = timed(reconcile, args.runs)
    deep_seconds, deep_report = timed(lambda: reconcile(deep=True), args.runs)
    print(f"\n{wallets:,} wallets, {entries:,} ledger entries ({args.database}), median of {args.runs} runs")
    print(f"raw query         {raw_seconds * 1000:8.0f} ms  {RAW_QUERY} ({groups:,} rows fetched)")
    print(f"  server side     {server_seconds * 1000:8.0f} ms  the same, its rows counted in the database")
    verdict = "hold" if report.ok else "VIOLATED"
    print(f"reconcile         {reconcile_seconds * 1000:8.0f} ms  invariants {verdict}")
    print(
        f"reconcile --deep  {deep_seconds * 1000:8.0f} ms  also re-derives totals from the reservation record"
    )
    print(
        f"ratio             {reconcile_seconds / raw_seconds:8.2f}x  reconcile / raw query (goal: at most 2x)"
    )
    print(f"                  {reconcile_seconds / server_seconds:8.2f}x  reconcile / raw query, server side")
    print(f"                  {deep_seconds / raw_seconds:8.2f}x  reconcile --deep / raw query")
    if not deep_report.ok:
        report = deep_report
    if not report.ok:
        print(report.as_dict())
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
