"""A long history, loaded in bulk and consistently: every invariant still holds after.

For each seeded wallet, ``per_wallet`` settled Cloud charges of 0.01 EUR, as if bought one
after the other over past hours: a ledger entry each (sequence and balance_after chained
from the wallet's current state, I1 and I9), the Cloud charge and a terminated server,
the capture and the settled charge that record its settlement (I5), the delivered outbox
row, one grant covering them all (I3), Cloud's allowance totals (I4), and the wallet's
balance and sequence counter.
One INSERT ... SELECT generate_series per table, in one transaction, then ANALYZE, as
autovacuum would have done on a database that grew that large by itself.
"""

from __future__ import annotations

import time

from .common import connect

HANDLER = "billing.settle_charge"  # the subscription name (bus.subscribe)

LOAD = [
    # The charges to be, one row each, numbered per wallet from the wallet's current state.
    """
    CREATE TEMP TABLE history ON COMMIT DROP AS
    SELECT w.id AS wallet_id, w.owner_id, w.ledger_sequence + k AS sequence,
           w.balance - k AS balance_after, gen_random_uuid() AS charge_id,
           gen_random_uuid() AS entry_id, gen_random_uuid() AS server_id,
           now() - make_interval(mins => %(per_wallet)s - k + 1) AS at
    FROM billing_wallet w CROSS JOIN generate_series(1, %(per_wallet)s) k
    WHERE w.id = ANY(%(wallets)s::uuid[])
    """,
    """
    INSERT INTO billing_ledgerentry (id, wallet_id, sequence, kind, amount, balance_after, transaction_date,
                                     posted_at, description, reference, context, source_id)
    SELECT entry_id, wallet_id, sequence, 'charge', -1, balance_after, at, at,
           'Server h' || sequence || ' (s-1vcpu-1gb), first hour', 'charge:' || charge_id, 'cloud', charge_id
    FROM history
    """,
    # Billing's applied-once record of each charge, naming the entry that settled it.
    """
    INSERT INTO billing_settledcharge (charge_id, wallet_id, context, amount, currency, subject_id,
                                       description, period_start, period_end, transaction_date,
                                       ledger_entry_id, invoice_line_id, created_at)
    SELECT charge_id, wallet_id, 'cloud', 1, 'EUR', server_id,
           'Server h' || sequence || ' (s-1vcpu-1gb), first hour', at, at + interval '1 hour', at,
           entry_id, NULL, at
    FROM history
    """,
    """
    INSERT INTO cloud_server (id, wallet_id, name, status, created_at, paid_until, terminated_at,
                              owner_id, plan_id, operator_reason)
    SELECT server_id, wallet_id, 'h' || sequence, 'terminated', at, at + interval '1 hour',
           at + interval '1 hour', owner_id, 's-1vcpu-1gb', ''
    FROM history
    """,
    """
    INSERT INTO cloud_charge (id, wallet_id, amount, currency, description, subject_id, period_start,
                              period_end, transaction_date, created_at, owner_id, refunded_amount)
    SELECT charge_id, wallet_id, 1, 'EUR', 'Server h' || sequence || ' (s-1vcpu-1gb), first hour', server_id,
           at, at + interval '1 hour', at, at, owner_id, 0
    FROM history
    """,
    """
    INSERT INTO billing_reservation (id, context, kind, amount, source_id, created_at, ledger_entry_id,
                                     wallet_id)
    SELECT gen_random_uuid(), 'cloud', 'capture', 1, charge_id, at, entry_id, wallet_id FROM history
    """,
    """
    INSERT INTO contracts_outboxmessage (event_id, event_type, handler, payload, wallet_id, status, attempts,
                                         last_error, created_at, available_at, delivered_at)
    SELECT gen_random_uuid(), 'ChargeRecorded', %(handler)s,
           jsonb_build_object('charge_id', charge_id, 'wallet_id', wallet_id, 'context', 'cloud',
                              'amount', 1, 'currency', 'EUR', 'transaction_date', at,
                              'description', 'Server h' || sequence || ' (s-1vcpu-1gb), first hour'),
           wallet_id, 'done', 1, '', at, at, at
    FROM history
    """,
    """
    INSERT INTO billing_reservation (id, context, kind, amount, source_id, created_at, ledger_entry_id,
                                     wallet_id)
    SELECT gen_random_uuid(), 'cloud', 'grant', count(*), NULL, min(at), NULL, wallet_id
    FROM history GROUP BY wallet_id
    """,
    # The grant and the captures cancel out: the hold's amount is unchanged, its running
    # totals (granted, captured) both grow by the charges.
    """
    INSERT INTO billing_hold (wallet_id, context, amount, granted_total, captured_total, released_total)
    SELECT wallet_id, 'cloud', 0, count(*), count(*), 0 FROM history GROUP BY wallet_id
    ON CONFLICT (wallet_id, context) DO UPDATE
    SET granted_total = billing_hold.granted_total + EXCLUDED.granted_total,
        captured_total = billing_hold.captured_total + EXCLUDED.captured_total
    """,
    """
    INSERT INTO cloud_allowance (wallet_id, owner_id, currency, amount, granted_total, charged_total,
                                 released_total, created_at, last_used_at, blocked)
    SELECT wallet_id, min(owner_id), 'EUR', 0, count(*), count(*), 0, min(at), max(at), false
    FROM history GROUP BY wallet_id
    ON CONFLICT (wallet_id) DO UPDATE
    SET granted_total = cloud_allowance.granted_total + EXCLUDED.granted_total,
        charged_total = cloud_allowance.charged_total + EXCLUDED.charged_total
    """,
    """
    UPDATE billing_wallet w SET balance = w.balance - h.n, ledger_sequence = w.ledger_sequence + h.n
    FROM (SELECT wallet_id, count(*) AS n FROM history GROUP BY wallet_id) h
    WHERE h.wallet_id = w.id
    """,
]


def load(database: str, *, wallet_ids: list[str], per_wallet: int) -> dict:
    """Add ``per_wallet`` settled charges to each wallet; returns rows and seconds."""
    started = time.perf_counter()
    with connect(database) as conn:
        params = {"wallets": wallet_ids, "per_wallet": per_wallet, "handler": HANDLER}
        for statement in LOAD:
            conn.execute(statement, params)
        conn.commit()
    loaded_s = time.perf_counter() - started
    with connect(database, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        (entries,) = conn.execute("SELECT count(*) FROM billing_ledgerentry").fetchone()
    return {
        "ledger_entries": entries,
        "load_s": round(loaded_s, 1),
        "vacuum_analyze_s": round(time.perf_counter() - started - loaded_s, 1),
    }
