"""Billing's own invariants, checked with set-based SQL: aggregates and joins run in
the database, only violations come back. Also what reconcile lists for an operator
without it being a violation (``money_in_report``): old pending top-ups, parked
payments, wallets in debt."""

from __future__ import annotations

import datetime as dt
import uuid

from django.conf import settings
from django.db import connection
from django.utils import timezone

from iaas.contracts.billing import MoneyInReport, ParkedPaymentFacts, PendingTopUpFacts, WalletDebtFacts
from iaas.contracts.checks import Violation

from .models import ParkedPayment, TopUp, Wallet

# One pass over the ledger, in (wallet, sequence) order (the covering unique index
# ledger_sequence_unique gives that order without a sort or a visit to the table): per
# wallet the sum (I1), the count and last sequence (I9: with (wallet, sequence) unique
# and sequence >= 1, sequences are 1..n without a gap exactly when count = last), the
# entries whose balance_after is not the previous one's plus their amount (I9's chain)
# and the sum of charges; joined to the wallet's balance, reserved and counter and to
# its holds: reserved = the holds' sum (I3), charges booked = the holds' captured
# totals (I5, the database keeping each charge's capture unique).
LEDGER_CHECK = """
SELECT w.id, w.balance, w.ledger_sequence, w.reserved,
       COALESCE(l.total, 0), COALESCE(l.entries, 0), COALESCE(l.last_sequence, 0),
       COALESCE(l.broken, 0), COALESCE(l.charged, 0),
       COALESCE(h.held, 0), COALESCE(h.captured, 0)
FROM billing_wallet w
LEFT JOIN (
    SELECT wallet_id, CAST(SUM(amount) AS BIGINT) AS total, COUNT(*) AS entries,
           MAX(sequence) AS last_sequence,
           COUNT(*) FILTER (WHERE balance_after <> previous + amount) AS broken,
           CAST(-SUM(amount) FILTER (WHERE kind = 'charge') AS BIGINT) AS charged
    FROM (
        SELECT wallet_id, sequence, amount, balance_after, kind,
               COALESCE(LAG(balance_after) OVER w, 0) AS previous
        FROM billing_ledgerentry
        WINDOW w AS (PARTITION BY wallet_id ORDER BY sequence)
    ) chained
    GROUP BY wallet_id
) l ON l.wallet_id = w.id
LEFT JOIN (
    SELECT wallet_id, CAST(SUM(amount) AS BIGINT) AS held, CAST(SUM(captured_total) AS BIGINT) AS captured
    FROM billing_hold GROUP BY wallet_id
) h ON h.wallet_id = w.id
WHERE w.balance <> COALESCE(l.total, 0)
   OR w.ledger_sequence <> COALESCE(l.last_sequence, 0)
   OR COALESCE(l.entries, 0) <> COALESCE(l.last_sequence, 0)
   OR COALESCE(l.broken, 0) > 0
   OR w.reserved <> COALESCE(h.held, 0)
   OR COALESCE(l.charged, 0) <> COALESCE(h.captured, 0)
"""

I2_RESERVED_WITHIN_BALANCE = """
SELECT id, balance, reserved FROM billing_wallet
WHERE balance < 0 OR reserved < 0 OR reserved > balance
"""

# --deep: the holds' running totals re-derived from their reservation record.
I3_HOLD_IS_RESERVATION_RECORD = """
SELECT COALESCE(h.wallet_id, r.wallet_id), COALESCE(h.context, r.context),
       COALESCE(r.granted, 0), COALESCE(r.captured, 0), COALESCE(r.released, 0),
       COALESCE(h.granted_total, 0), COALESCE(h.captured_total, 0), COALESCE(h.released_total, 0)
FROM billing_hold h
FULL OUTER JOIN (
    SELECT wallet_id, context,
           SUM(CASE WHEN kind = 'grant' THEN amount ELSE 0 END) AS granted,
           SUM(CASE WHEN kind = 'capture' THEN amount ELSE 0 END) AS captured,
           SUM(CASE WHEN kind = 'release' THEN amount ELSE 0 END) AS released
    FROM billing_reservation GROUP BY wallet_id, context
) r ON r.wallet_id = h.wallet_id AND r.context = h.context
WHERE COALESCE(h.granted_total, 0) <> COALESCE(r.granted, 0)
   OR COALESCE(h.captured_total, 0) <> COALESCE(r.captured, 0)
   OR COALESCE(h.released_total, 0) <> COALESCE(r.released, 0)
"""

# --deep, I5 row by row: every charge entry has exactly one capture and every capture one charge
# entry, of the same wallet, first charge and amount. (A charge booked twice is two entries
# with one charge id; captures are unique per charge id, so one entry has none.)
I5_CHARGE_CAPTURED_ONCE = """
SELECT COALESCE(l.wallet_id, r.wallet_id), COALESCE(l.source_id, r.source_id),
       -l.amount, r.amount, l.id IS NULL, r.ledger_entry_id IS NULL
FROM (SELECT id, wallet_id, source_id, amount FROM billing_ledgerentry WHERE kind = 'charge') l
FULL OUTER JOIN (
    SELECT wallet_id, source_id, amount, ledger_entry_id FROM billing_reservation WHERE kind = 'capture'
) r ON r.ledger_entry_id = l.id
WHERE l.id IS NULL OR r.ledger_entry_id IS NULL OR r.amount <> -l.amount
   OR r.source_id IS DISTINCT FROM l.source_id OR r.wallet_id <> l.wallet_id
"""

# --deep, I5 per entry: a charge entry books exactly its settled charges (amount = -their
# sum, at least one; its first charge is one of them) ...
I5_ENTRY_IS_ITS_CHARGES = """
SELECT l.wallet_id, l.sequence, -l.amount, COALESCE(c.total, 0), COALESCE(c.charges, 0)
FROM billing_ledgerentry l
LEFT JOIN (
    SELECT ledger_entry_id, SUM(amount) AS total, COUNT(*) AS charges,
           MAX(CASE WHEN charge_id = first_charge THEN 1 ELSE 0 END) AS has_first
    FROM (SELECT s.ledger_entry_id, s.amount, s.charge_id, e.source_id AS first_charge
          FROM billing_settledcharge s JOIN billing_ledgerentry e ON e.id = s.ledger_entry_id) t
    GROUP BY ledger_entry_id
) c ON c.ledger_entry_id = l.id
WHERE l.kind = 'charge' AND (c.total IS NULL OR c.total <> -l.amount OR c.has_first = 0)
"""

# ... and each settled charge is on a charge entry of its own wallet and context, in its
# wallet's currency.
I5_CHARGE_ON_ITS_ENTRY = """
SELECT s.wallet_id, s.charge_id, l.kind, l.wallet_id, l.context, s.context, s.currency, w.currency
FROM billing_settledcharge s
JOIN billing_ledgerentry l ON l.id = s.ledger_entry_id
JOIN billing_wallet w ON w.id = s.wallet_id
WHERE l.kind <> 'charge' OR l.wallet_id <> s.wallet_id OR l.context <> s.context OR s.currency <> w.currency
"""

# Detail for the few wallets the ledger pass flagged: which entries break the chain.
I9_BROKEN_ENTRIES = """
SELECT wallet_id, sequence, expected_sequence, balance_after, expected_balance FROM (
    SELECT wallet_id, sequence, balance_after,
           ROW_NUMBER() OVER w AS expected_sequence,
           COALESCE(LAG(balance_after) OVER w, 0) + amount AS expected_balance
    FROM billing_ledgerentry WHERE wallet_id IN ({wallets})
    WINDOW w AS (PARTITION BY wallet_id ORDER BY sequence)
) chained
WHERE sequence <> expected_sequence OR balance_after <> expected_balance
ORDER BY wallet_id, sequence
LIMIT 1000
"""
# Portable SQL (the embedded SQLite has no ANY(array)): one placeholder per wallet, in
# chunks well under both databases' limits on bound parameters.
I9_WALLETS_PER_QUERY = 500
I9_MAX_REPORTED = 1000

# The append-only tables and their triggers (migrations 0002, 0004, 0007, 0009 and 0014;
# settled charges allow one UPDATE, setting their invoice line once).
APPEND_ONLY_TABLES = (
    "billing_ledgerentry",
    "billing_reservation",
    "billing_invoice",
    "billing_invoiceline",
    "billing_refund",
    "billing_settledcharge",
)

# A refund credits one settled charge, at most its amount, by a refund entry of exactly
# the refund's amount (the one-to-one link makes it at most once).
I5_REFUND_WITHIN_CHARGE = """
SELECT r.wallet_id, r.id, c.amount AS charged, r.amount, e.kind, e.amount
FROM billing_refund r
JOIN billing_settledcharge c ON c.charge_id = r.charge_id
JOIN billing_ledgerentry e ON e.id = r.ledger_entry_id
WHERE r.amount > c.amount OR e.kind <> 'refund' OR e.amount <> r.amount
   OR c.wallet_id <> r.wallet_id OR e.wallet_id <> r.wallet_id
"""

I6_TRIGGERS = """
SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE t.tgname = c.relname || '_append_only' AND NOT t.tgisinternal AND t.tgenabled <> 'D'
"""

# SQLite (the embedded default) has no per-statement switch to disable a trigger: one
# that exists is in force. Each table has one RAISE(ABORT) trigger per refused operation
# (iaas.common.append_only), named <table>_no_update and <table>_no_delete.
I6_SQLITE_TRIGGERS = """
SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'trigger'
"""

# I7: with (series, sequence) unique and sequence >= 1, a series is gapless exactly when
# its count equals its highest number; its counter must stand at that number (a counter
# ahead of the invoices means a number was taken and lost).
I7_SERIES_GAPLESS = """
SELECT COALESCE(s.series, i.series), COALESCE(i.issued, 0), COALESCE(i.highest, 0),
       COALESCE(s.last_number, 0)
FROM billing_invoiceseries s
FULL OUTER JOIN (
    SELECT series, COUNT(*) AS issued, MAX(sequence) AS highest
    FROM billing_invoice GROUP BY series
) i ON i.series = s.series
WHERE COALESCE(i.issued, 0) <> COALESCE(i.highest, 0)
   OR COALESCE(i.highest, 0) <> COALESCE(s.last_number, 0)
"""

# I8: a settled charge that an issued invoice's run should have taken (in the wallet's
# ledger by the time it was issued, dated before its period's end) but that is on no
# line. (At most one line per charge: the charge names its line, set once.)
I8_CHARGE_NOT_INVOICED = """
SELECT c.wallet_id, c.charge_id, MIN(i.number)
FROM billing_invoice i
JOIN billing_settledcharge c
  ON c.wallet_id = i.wallet_id AND c.invoice_line_id IS NULL AND c.transaction_date < i.period_end
JOIN billing_ledgerentry l ON l.id = c.ledger_entry_id AND l.sequence <= i.ledger_sequence
GROUP BY c.wallet_id, c.charge_id
"""

# A line is the sum of its charges (at least one), each of the invoice's wallet and of the
# line's context, dated before the period's end and settled by the time it was issued.
I8_LINE_IS_ITS_CHARGES = """
SELECT i.wallet_id, i.number, il.id, il.amount, COALESCE(c.total, 0), COALESCE(c.misplaced, 0)
FROM billing_invoiceline il
JOIN billing_invoice i ON i.id = il.invoice_id
LEFT JOIN (
    SELECT s.invoice_line_id, SUM(s.amount) AS total,
           SUM(CASE WHEN s.wallet_id <> si.wallet_id OR s.context <> sl.context
                      OR s.transaction_date >= si.period_end OR l.sequence > si.ledger_sequence
                    THEN 1 ELSE 0 END) AS misplaced
    FROM billing_settledcharge s
    JOIN billing_invoiceline sl ON sl.id = s.invoice_line_id
    JOIN billing_invoice si ON si.id = sl.invoice_id
    JOIN billing_ledgerentry l ON l.id = s.ledger_entry_id
    GROUP BY s.invoice_line_id
) c ON c.invoice_line_id = il.id
WHERE COALESCE(c.total, 0) <> il.amount OR COALESCE(c.misplaced, 0) > 0
"""

I8_INVOICE_TOTAL = """
SELECT i.wallet_id, i.number, COALESCE(s.total, 0), i.total
FROM billing_invoice i
LEFT JOIN (SELECT invoice_id, SUM(amount) AS total FROM billing_invoiceline GROUP BY invoice_id) s
       ON s.invoice_id = i.id
JOIN billing_wallet w ON w.id = i.wallet_id
WHERE i.total <> COALESCE(s.total, 0) OR i.owner_id <> w.owner_id OR i.currency <> w.currency
"""


def _rows(sql: str, params=None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def check_ledger() -> dict[str, list[Violation]]:
    """I1, I3 (reserved), I5 (in sum) and I9 from one pass over the ledger."""
    found: dict[str, list[Violation]] = {"I1": [], "I3": [], "I5": [], "I9": []}
    chain_broken = []
    for row in _rows(LEDGER_CHECK):
        w, balance, counter, reserved, total, entries, last, broken, charged, held, captured = row
        # SUM(bigint) is numeric: back to int, as money is everywhere else.
        total, charged, held, captured = int(total), int(charged), int(held), int(captured)
        wallet_id = _uuid(w)
        if balance != total:
            found["I1"].append(
                Violation("I1", wallet_id, total, balance, "balance differs from the ledger's sum")
            )
        if reserved != held:
            found["I3"].append(
                Violation("I3", wallet_id, held, reserved, "reserved differs from the sum of holds")
            )
        if charged != captured:
            found["I5"].append(
                Violation("I5", wallet_id, captured, charged, "charges on the ledger differ from captures")
            )
        if counter != last:
            found["I9"].append(
                Violation(
                    "I9", wallet_id, last, counter, "wallet's sequence counter differs from its last entry"
                )
            )
        if entries != last:
            found["I9"].append(
                Violation(
                    "I9", wallet_id, {"entries": last}, {"entries": entries}, "ledger sequence has a gap"
                )
            )
        if broken:
            chain_broken.append(w)
    if chain_broken:
        found["I9"] += [
            Violation(
                "I9",
                _uuid(w),
                {"sequence": exp_seq, "balance_after": exp_bal},
                {"sequence": seq, "balance_after": bal},
                "ledger chain broken",
            )
            for w, seq, exp_seq, bal, exp_bal in _broken_entries(chain_broken)
            if bal != exp_bal
        ]
    return found


def _broken_entries(wallet_ids: list) -> list[tuple]:
    """The entries that break the chain of these wallets (at most I9_MAX_REPORTED)."""
    found: list[tuple] = []
    for start in range(0, len(wallet_ids), I9_WALLETS_PER_QUERY):
        chunk = wallet_ids[start : start + I9_WALLETS_PER_QUERY]
        sql = I9_BROKEN_ENTRIES.format(wallets=", ".join(["%s"] * len(chunk)))
        found += _rows(sql, chunk)
        if len(found) >= I9_MAX_REPORTED:
            break
    return found[:I9_MAX_REPORTED]


def check_i2() -> list[Violation]:
    return [
        Violation("I2", _uuid(w), "0 <= reserved <= balance", {"balance": b, "reserved": r})
        for w, b, r in _rows(I2_RESERVED_WITHIN_BALANCE)
    ]


def check_i3_deep() -> list[Violation]:
    return [
        Violation(
            "I3",
            _uuid(w),
            {"granted": int(granted), "captured": int(captured), "released": int(released)},
            {"granted": h_granted, "captured": h_captured, "released": h_released},
            f"{context} hold's totals differ from its reservation record",
        )
        for w, context, granted, captured, released, h_granted, h_captured, h_released in _rows(
            I3_HOLD_IS_RESERVATION_RECORD
        )
    ]


def check_i5_deep() -> list[Violation]:
    found = []
    for w, charge, booked, captured, no_entry, no_capture in _rows(I5_CHARGE_CAPTURED_ONCE):
        if no_capture:
            detail = f"charge {charge} is on the ledger without a capture (booked twice?)"
        elif no_entry:
            detail = f"capture of charge {charge} has no charge entry"
        else:
            detail = f"capture of charge {charge} differs from its entry"
        found.append(Violation("I5", _uuid(w), booked, captured, detail))
    found += [
        Violation(
            "I5",
            _uuid(w),
            {"settled charges": booked},
            {"settled charges": int(total), "count": count},
            f"charge entry #{sequence} differs from the charges it settles (or lacks its first)",
        )
        for w, sequence, booked, total, count in _rows(I5_ENTRY_IS_ITS_CHARGES)
    ]
    found += [
        Violation(
            "I5",
            _uuid(w),
            {"entry": "charge of its wallet and context", "currency": wallet_currency},
            {"entry": f"{kind} of {entry_wallet} ({entry_context})", "currency": currency},
            f"settled {context} charge {charge} is not on a charge entry of its own",
        )
        for w, charge, kind, entry_wallet, entry_context, context, currency, wallet_currency in _rows(
            I5_CHARGE_ON_ITS_ENTRY
        )
    ]
    return found


def check_refunds() -> list[Violation]:
    return [
        Violation(
            "I5",
            _uuid(w),
            {"at most": charged, "entry": "refund of the same amount"},
            {"refunded": amount, "entry": f"{entry_kind} {entry_amount}"},
            f"refund {refund} does not match the charge it refunds",
        )
        for w, refund, charged, amount, entry_kind, entry_amount in _rows(I5_REFUND_WITHIN_CHARGE)
    ]


def check_i6() -> list[Violation]:
    """Every append-only table has its triggers, enabled: on PostgreSQL one per table
    (pg_trigger), on SQLite one per refused operation (sqlite_master)."""
    if connection.vendor == "postgresql":
        guarded = {table for (table,) in _rows(I6_TRIGGERS)}
        return [
            Violation("I6", None, "append-only trigger enabled", "missing or disabled", table)
            for table in APPEND_ONLY_TABLES
            if table not in guarded
        ]
    if connection.vendor == "sqlite":
        present = {
            (table, name)
            for table, name, sql in _rows(I6_SQLITE_TRIGGERS)
            if "RAISE(ABORT" in (sql or "").upper().replace(" ", "")
        }
        found = []
        for table in APPEND_ONLY_TABLES:
            missing = [
                operation
                for operation in ("UPDATE", "DELETE")
                if (table, f"{table}_no_{operation.lower()}") not in present
            ]
            if missing:
                expected = "triggers refusing UPDATE and DELETE"
                found.append(Violation("I6", None, expected, f"missing for {' and '.join(missing)}", table))
        return found
    # Never a silent ok: a database this check cannot read is reported as unchecked.
    return [Violation("I6", None, "append-only triggers checked", f"not checkable on {connection.vendor}")]


def check_i7() -> list[Violation]:
    return [
        Violation(
            "I7",
            None,
            {"invoices": highest, "counter": highest},
            {"invoices": issued, "counter": counter},
            f"series {series}: numbers 1 to {highest} should each be issued once",
        )
        for series, issued, highest, counter in _rows(I7_SERIES_GAPLESS)
    ]


def check_i8() -> list[Violation]:
    found = [
        Violation("I8", _uuid(w), "on an invoice line", "on none", f"charge {charge} missed by {number}")
        for w, charge, number in _rows(I8_CHARGE_NOT_INVOICED)
    ]
    found += [
        Violation(
            "I8",
            _uuid(w),
            {"amount": amount, "misplaced charges": 0},
            {"amount": int(total), "misplaced charges": int(misplaced)},
            f"{number}: line {line} differs from its charges",
        )
        for w, number, line, amount, total, misplaced in _rows(I8_LINE_IS_ITS_CHARGES)
    ]
    found += [
        Violation("I8", _uuid(w), int(expected), total, f"{number}: total differs from its lines (or wallet)")
        for w, number, expected, total in _rows(I8_INVOICE_TOTAL)
    ]
    return found


# --- I12: money coming in -------------------------------------------------------------------
# ARCHITECTURE.md, "Money coming in". Ledger entries are found by kind and source (the
# top-up, the reversal), never by the text of their reference, which spells a UUID
# differently on SQLite; only a reversal-kind entry's prefix ("debt:" for a top-up's
# debt payment, "reversal:" for a reversal) tells the two apart.

# Every succeeded top-up has exactly one top_up entry sourced to it, the one it links to,
# of its amount and on its wallet; a top-up that did not succeed has none.
I12_TOP_UP_CREDITED_ONCE = """
SELECT t.wallet_id, t.id, t.status, t.amount, COALESCE(e.entries, 0), COALESCE(e.total, 0),
       l.id, l.kind, l.amount, l.wallet_id, l.source_id
FROM billing_topup t
LEFT JOIN (
    SELECT source_id, COUNT(*) AS entries, CAST(SUM(amount) AS BIGINT) AS total
    FROM billing_ledgerentry WHERE kind = 'top_up' GROUP BY source_id
) e ON e.source_id = t.id
LEFT JOIN billing_ledgerentry l ON l.id = t.ledger_entry_id
WHERE (t.status = 'succeeded' AND (
          COALESCE(e.entries, 0) <> 1 OR l.id IS NULL OR l.kind <> 'top_up' OR l.amount <> t.amount
          OR l.wallet_id <> t.wallet_id OR l.source_id IS NULL OR l.source_id <> t.id))
   OR (t.status <> 'succeeded' AND (COALESCE(e.entries, 0) > 0 OR t.ledger_entry_id IS NOT NULL))
"""

# ... and every top_up entry is a top-up's (the query above judges the top-up's side).
I12_CREDIT_OF_NO_TOP_UP = """
SELECT l.wallet_id, l.sequence, l.amount, l.source_id
FROM billing_ledgerentry l
LEFT JOIN billing_topup t ON t.id = l.source_id
WHERE l.kind = 'top_up' AND t.id IS NULL
"""

# A top-up that paid debt (debt_paid > 0) has one "debt:" reversal entry of -debt_paid on
# its wallet, and a "debt:" entry belongs to such a succeeded top-up.
I12_DEBT_PAID_ONCE = """
SELECT COALESCE(t.wallet_id, d.wallet_id), COALESCE(t.id, d.source_id), t.status,
       COALESCE(t.debt_paid, 0), COALESCE(d.entries, 0), COALESCE(d.paid, 0), d.wallet_id
FROM (SELECT id, wallet_id, status, debt_paid FROM billing_topup WHERE debt_paid <> 0) t
FULL OUTER JOIN (
    SELECT source_id, wallet_id, COUNT(*) AS entries, CAST(-SUM(amount) AS BIGINT) AS paid
    FROM billing_ledgerentry WHERE kind = 'reversal' AND reference LIKE 'debt:%'
    GROUP BY source_id, wallet_id
) d ON d.source_id = t.id
WHERE t.id IS NULL OR d.source_id IS NULL OR d.entries <> 1 OR d.paid <> t.debt_paid
   OR d.wallet_id <> t.wallet_id OR t.status <> 'succeeded'
"""

# A reversal reverses a succeeded top-up of its own wallet; what it took is one reversal
# entry of -taken on that wallet, sourced to it (none when it took nothing) ...
I12_REVERSAL_BOOKED = """
SELECT r.wallet_id, r.id, r.taken, t.wallet_id, t.status, l.id, l.kind, l.amount, l.wallet_id, l.source_id
FROM billing_paymentreversal r
JOIN billing_topup t ON t.id = r.top_up_id
LEFT JOIN billing_ledgerentry l ON l.id = r.ledger_entry_id
WHERE t.wallet_id <> r.wallet_id OR t.status <> 'succeeded'
   OR (r.taken > 0 AND (l.id IS NULL OR l.kind <> 'reversal' OR l.amount <> -r.taken
                        OR l.wallet_id <> r.wallet_id OR l.source_id IS NULL OR l.source_id <> r.id))
   OR (r.taken = 0 AND r.ledger_entry_id IS NOT NULL)
"""

# ... every other reversal entry is a reversal's ...
I12_REVERSAL_ENTRY_OF_NO_REVERSAL = """
SELECT l.wallet_id, l.sequence, l.amount, l.reference
FROM billing_ledgerentry l
LEFT JOIN billing_paymentreversal r ON r.ledger_entry_id = l.id
WHERE l.kind = 'reversal' AND l.reference NOT LIKE 'debt:%' AND r.id IS NULL
"""

# ... and the reversals of a top-up take back at most what it brought in.
I12_REVERSED_WITHIN_TOP_UP = """
SELECT t.wallet_id, t.id, t.amount, CAST(SUM(r.amount) AS BIGINT)
FROM billing_paymentreversal r
JOIN billing_topup t ON t.id = r.top_up_id
GROUP BY t.wallet_id, t.id, t.amount
HAVING SUM(r.amount) > t.amount
"""

# A wallet's debt is what its reversals could not take less what its top-ups paid of it.
I12_DEBT_IS_ITS_RECORD = """
SELECT w.id, w.debt, COALESCE(r.added, 0), COALESCE(p.paid, 0)
FROM billing_wallet w
LEFT JOIN (
    SELECT wallet_id, CAST(SUM(debt_added) AS BIGINT) AS added FROM billing_paymentreversal GROUP BY wallet_id
) r ON r.wallet_id = w.id
LEFT JOIN (
    SELECT wallet_id, CAST(SUM(debt_paid) AS BIGINT) AS paid FROM billing_topup
    WHERE debt_paid <> 0 GROUP BY wallet_id
) p ON p.wallet_id = w.id
WHERE w.debt <> COALESCE(r.added, 0) - COALESCE(p.paid, 0)
"""


def check_i12() -> list[Violation]:
    """Money coming in (I12): each succeeded top-up credited exactly once, each debt payment
    and each reversal booked as recorded, reversals within their top-up, and each wallet's
    debt equal to its record."""
    found = [_top_up_violation(*row) for row in _rows(I12_TOP_UP_CREDITED_ONCE)]
    found += [
        Violation(
            "I12",
            _uuid(w),
            "a top_up entry of a top-up",
            {"entry": sequence, "amount": amount},
            f"top_up entry #{sequence} credits no top-up (source {_uuid(source) if source else None})",
        )
        for w, sequence, amount, source in _rows(I12_CREDIT_OF_NO_TOP_UP)
    ]
    for w, top_up, status, debt_paid, entries, paid, entry_wallet in _rows(I12_DEBT_PAID_ONCE):
        entries, paid, top_up = int(entries), int(paid), _uuid(top_up)
        if status is None:
            detail = f"debt entry of top-up {top_up} that paid no debt"
        elif status != TopUp.Status.SUCCEEDED:
            detail = f"{status} top-up {top_up} paid debt"
        elif entry_wallet is not None and _uuid(entry_wallet) != _uuid(w):
            detail = f"debt payment of top-up {top_up} booked on wallet {_uuid(entry_wallet)}"
        else:
            detail = f"debt payment of top-up {top_up} differs from its debt entry"
        found.append(
            Violation(
                "I12",
                _uuid(w),
                {"debt_paid": debt_paid, "debt entries": 1 if status else 0},
                {"debt entries": entries, "paid": paid},
                detail,
            )
        )
    for row in _rows(I12_REVERSAL_BOOKED):
        w, reversal, taken, top_up_wallet, top_up_status, entry, kind, amount, _wallet, _source = row
        reversal = _uuid(reversal)
        if _uuid(top_up_wallet) != _uuid(w) or top_up_status != TopUp.Status.SUCCEEDED:
            expected, found_ = (
                "a succeeded top-up of its wallet",
                f"{top_up_status} top-up of {_uuid(top_up_wallet)}",
            )
            detail = f"reversal {reversal} reverses no succeeded top-up of its wallet"
        else:
            expected = {"entry": f"reversal {-taken}" if taken else None}
            found_ = {"entry": f"{kind} {amount}" if entry else None}
            detail = f"reversal {reversal} differs from its ledger entry (or its wallet, or source)"
        found.append(Violation("I12", _uuid(w), expected, found_, detail))
    found += [
        Violation(
            "I12",
            _uuid(w),
            "a reversal entry of a reversal or a debt payment",
            {"entry": sequence, "amount": amount},
            f"reversal entry #{sequence} ({reference}) books no reversal",
        )
        for w, sequence, amount, reference in _rows(I12_REVERSAL_ENTRY_OF_NO_REVERSAL)
    ]
    found += [
        Violation(
            "I12",
            _uuid(w),
            {"reversed at most": amount},
            {"reversed": int(reversed_)},
            f"reversals of top-up {_uuid(top_up)} exceed its amount",
        )
        for w, top_up, amount, reversed_ in _rows(I12_REVERSED_WITHIN_TOP_UP)
    ]
    found += [
        Violation(
            "I12",
            _uuid(w),
            int(added) - int(paid),
            debt,
            f"debt differs from reversals' debt ({int(added)}) less debt paid by top-ups ({int(paid)})",
        )
        for w, debt, added, paid in _rows(I12_DEBT_IS_ITS_RECORD)
    ]
    return found


def _top_up_violation(
    w, top_up, status, amount, entries, total, entry, kind, entry_amount, entry_wallet, source
) -> Violation:
    entries, total, top_up = int(entries), int(total), _uuid(top_up)
    found = {"credits": entries, "credited": total}
    if status != TopUp.Status.SUCCEEDED:
        return Violation("I12", _uuid(w), {"credits": 0}, found, f"{status} top-up {top_up} was credited")
    if entries != 1:
        detail = f"succeeded top-up {top_up} credited {entries} times"
    else:
        found["entry"] = f"{kind} {entry_amount}" if entry else None
        detail = f"succeeded top-up {top_up} is not linked to its credit (of its amount, on its wallet)"
    return Violation("I12", _uuid(w), {"credits": 1, "credited": amount}, found, detail)


# --- What reconcile lists for an operator: not violations -----------------------------------

# Each list is the first this many rows (its count says how many in all).
REPORTED_AT_MOST = 100


def money_in_report(*, now: dt.datetime | None = None) -> MoneyInReport:
    """Pending top-ups older than IAAS_TOP_UP_PENDING_REPORT_AFTER_SECONDS (a customer who
    walked away, or a provider's answer lost: ``finish_top_ups`` asks the provider),
    unresolved parked payments (an operator must place the money), and wallets in debt
    after a payment reversal (the largest first, with their status)."""
    now = now or timezone.now()
    after = settings.IAAS_TOP_UP_PENDING_REPORT_AFTER_SECONDS
    pending = TopUp.objects.filter(
        status=TopUp.Status.PENDING, created_at__lt=now - dt.timedelta(seconds=after)
    )
    parked = ParkedPayment.objects.filter(resolved_at__isnull=True)
    in_debt = Wallet.objects.filter(debt__gt=0)
    return MoneyInReport(
        pending_after_seconds=after,
        pending_top_ups=pending.count(),
        oldest_pending_top_ups=tuple(
            PendingTopUpFacts(
                top_up_id=top_up.id,
                wallet_id=top_up.wallet_id,
                amount=top_up.amount,
                currency=top_up.currency,
                provider=top_up.provider,
                provider_reference=top_up.provider_reference,
                origin=top_up.origin,
                failed_attempts=top_up.failed_attempts,
                created_at=top_up.created_at,
            )
            for top_up in pending.order_by("created_at", "id")[:REPORTED_AT_MOST]
        ),
        parked_payments=parked.count(),
        unresolved_parked_payments=tuple(
            ParkedPaymentFacts(
                parked_payment_id=payment.id,
                provider=payment.provider,
                payment_reference=payment.payment_reference,
                amount=payment.amount,
                currency=payment.currency,
                why=payment.why,
                parked_at=payment.parked_at,
            )
            for payment in parked.order_by("parked_at", "id")[:REPORTED_AT_MOST]
        ),
        wallets_in_debt=in_debt.count(),
        largest_debts=tuple(
            WalletDebtFacts(
                wallet_id=wallet.id,
                currency=wallet.currency,
                debt=wallet.debt,
                status=wallet.status,
            )
            for wallet in in_debt.order_by("-debt", "id")[:REPORTED_AT_MOST]
        ),
    )


def check_all(*, deep: bool = False) -> dict[str, list[Violation]]:
    """Every invariant Billing can check on its own. ``deep`` adds the row-by-row
    re-derivations from the reservation record (I3, I5): the same invariants, proven
    from the log instead of from the running totals the database keeps consistent."""
    found = check_ledger()
    found["I2"] = check_i2()
    found["I5"] = found.get("I5", []) + check_refunds()
    found["I6"] = check_i6()
    found["I7"] = check_i7()
    found["I8"] = check_i8()
    found["I12"] = check_i12()
    if deep:
        found["I3"] += check_i3_deep()
        found["I5"] += check_i5_deep()
    return dict(sorted(found.items()))
