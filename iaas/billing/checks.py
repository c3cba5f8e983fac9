"""Billing's own invariants, checked with set-based SQL: aggregates and joins run in
the database, only violations come back."""

from __future__ import annotations

import uuid

from django.db import connection

from iaas.contracts.checks import Violation

I1_BALANCE_IS_LEDGER_SUM = """
SELECT w.id, COALESCE(l.total, 0) AS expected, w.balance AS found
FROM billing_wallet w
LEFT JOIN (SELECT wallet_id, SUM(amount) AS total FROM billing_ledgerentry GROUP BY wallet_id) l
       ON l.wallet_id = w.id
WHERE w.balance <> COALESCE(l.total, 0)
"""

I2_RESERVED_WITHIN_BALANCE = """
SELECT id, balance, reserved FROM billing_wallet
WHERE balance < 0 OR reserved < 0 OR reserved > balance
"""

I3_RESERVED_IS_HOLD_SUM = """
SELECT w.id, COALESCE(h.total, 0) AS expected, w.reserved AS found
FROM billing_wallet w
LEFT JOIN (SELECT wallet_id, SUM(amount) AS total FROM billing_hold GROUP BY wallet_id) h
       ON h.wallet_id = w.id
WHERE w.reserved <> COALESCE(h.total, 0)
"""

I3_HOLD_IS_RESERVATION_BALANCE = """
SELECT h.wallet_id, h.context, COALESCE(r.net, 0) AS expected, h.amount AS found
FROM billing_hold h
LEFT JOIN (
    SELECT wallet_id, context,
           SUM(CASE WHEN kind = 'grant' THEN amount ELSE -amount END) AS net
    FROM billing_reservation GROUP BY wallet_id, context
) r ON r.wallet_id = h.wallet_id AND r.context = h.context
WHERE h.amount <> COALESCE(r.net, 0) OR h.amount < 0
"""

I5_CHARGE_BOOKED_ONCE = """
SELECT wallet_id, source_id, COUNT(*) FROM billing_ledgerentry
WHERE kind = 'charge' GROUP BY wallet_id, source_id HAVING COUNT(*) > 1
"""

I5_CAPTURE_MATCHES_ENTRY = """
SELECT r.wallet_id, r.source_id, r.amount, -l.amount
FROM billing_reservation r JOIN billing_ledgerentry l ON l.id = r.ledger_entry_id
WHERE r.kind = 'capture' AND (l.amount <> -r.amount OR l.source_id <> r.source_id)
"""

I9_SEQUENCE_AND_CHAIN = """
SELECT wallet_id, sequence, expected_sequence, balance_after, expected_balance FROM (
    SELECT wallet_id, sequence, balance_after,
           ROW_NUMBER() OVER w AS expected_sequence,
           COALESCE(LAG(balance_after) OVER w, 0) + amount AS expected_balance
    FROM billing_ledgerentry
    WINDOW w AS (PARTITION BY wallet_id ORDER BY sequence)
) chained
WHERE sequence <> expected_sequence OR balance_after <> expected_balance
"""

I9_WALLET_COUNTER = """
SELECT w.id, COALESCE(l.last, 0), w.ledger_sequence
FROM billing_wallet w
LEFT JOIN (SELECT wallet_id, MAX(sequence) AS last FROM billing_ledgerentry GROUP BY wallet_id) l
       ON l.wallet_id = w.id
WHERE w.ledger_sequence <> COALESCE(l.last, 0)
"""

# The append-only tables and their triggers (migrations 0002 and 0004).
APPEND_ONLY_TABLES = ("billing_ledgerentry", "billing_invoice", "billing_invoiceline")

I6_TRIGGERS = """
SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE t.tgname = c.relname || '_append_only' AND NOT t.tgisinternal AND t.tgenabled <> 'D'
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

# I8: a charge that an issued invoice's run should have taken (in the wallet's ledger by
# the time it was issued, dated before its period's end) but that is on no line.
# (At most one line per charge is the one-to-one constraint's job.)
I8_CHARGE_NOT_INVOICED = """
SELECT l.wallet_id, l.source_id, MIN(i.number)
FROM billing_invoice i
JOIN billing_ledgerentry l
  ON l.wallet_id = i.wallet_id AND l.kind = 'charge'
 AND l.sequence <= i.ledger_sequence AND l.transaction_date < i.period_end
WHERE NOT EXISTS (SELECT 1 FROM billing_invoiceline il WHERE il.ledger_entry_id = l.id)
GROUP BY l.wallet_id, l.source_id
"""

I8_LINE_MATCHES_CHARGE = """
SELECT i.wallet_id, i.number, l.source_id, -l.amount, il.amount, l.kind
FROM billing_invoiceline il
JOIN billing_invoice i ON i.id = il.invoice_id
JOIN billing_ledgerentry l ON l.id = il.ledger_entry_id
WHERE l.kind <> 'charge' OR il.amount <> -l.amount OR l.wallet_id <> i.wallet_id
   OR l.transaction_date >= i.period_end OR l.sequence > i.ledger_sequence
"""

I8_INVOICE_TOTAL = """
SELECT i.wallet_id, i.number, COALESCE(s.total, 0), i.total
FROM billing_invoice i
LEFT JOIN (SELECT invoice_id, SUM(amount) AS total FROM billing_invoiceline GROUP BY invoice_id) s
       ON s.invoice_id = i.id
JOIN billing_wallet w ON w.id = i.wallet_id
WHERE i.total <> COALESCE(s.total, 0) OR i.owner_id <> w.owner_id OR i.currency <> w.currency
"""


def _rows(sql: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def _uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def check_i1() -> list[Violation]:
    return [
        Violation("I1", _uuid(w), expected, found, "balance differs from the ledger's sum")
        for w, expected, found in _rows(I1_BALANCE_IS_LEDGER_SUM)
    ]


def check_i2() -> list[Violation]:
    return [
        Violation("I2", _uuid(w), "0 <= reserved <= balance", {"balance": b, "reserved": r})
        for w, b, r in _rows(I2_RESERVED_WITHIN_BALANCE)
    ]


def check_i3() -> list[Violation]:
    found = [
        Violation("I3", _uuid(w), expected, found, "reserved differs from the sum of holds")
        for w, expected, found in _rows(I3_RESERVED_IS_HOLD_SUM)
    ]
    found += [
        Violation("I3", _uuid(w), expected, found, f"{context} hold differs from its reservation record")
        for w, context, expected, found in _rows(I3_HOLD_IS_RESERVATION_BALANCE)
    ]
    return found


def check_i5() -> list[Violation]:
    found = [
        Violation("I5", _uuid(w), 1, count, f"charge {charge} booked more than once")
        for w, charge, count in _rows(I5_CHARGE_BOOKED_ONCE)
    ]
    found += [
        Violation("I5", _uuid(w), expected, booked, f"capture of charge {charge} differs from its entry")
        for w, charge, expected, booked in _rows(I5_CAPTURE_MATCHES_ENTRY)
    ]
    return found


def check_i6() -> list[Violation]:
    if connection.vendor != "postgresql":
        return []
    guarded = {table for (table,) in _rows(I6_TRIGGERS)}
    return [
        Violation("I6", None, "append-only trigger enabled", "missing or disabled", table)
        for table in APPEND_ONLY_TABLES
        if table not in guarded
    ]


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
            {"amount": expected, "kind": "charge"},
            {"amount": amount, "kind": kind},
            f"{number}: line for charge {charge} does not match its ledger entry",
        )
        for w, number, charge, expected, amount, kind in _rows(I8_LINE_MATCHES_CHARGE)
    ]
    found += [
        Violation("I8", _uuid(w), expected, total, f"{number}: total differs from its lines (or wallet)")
        for w, number, expected, total in _rows(I8_INVOICE_TOTAL)
    ]
    return found


def check_i9() -> list[Violation]:
    found = [
        Violation(
            "I9",
            _uuid(w),
            {"sequence": exp_seq, "balance_after": exp_bal},
            {"sequence": seq, "balance_after": bal},
            "ledger chain broken",
        )
        for w, seq, exp_seq, bal, exp_bal in _rows(I9_SEQUENCE_AND_CHAIN)
    ]
    found += [
        Violation(
            "I9",
            _uuid(w),
            expected,
            counter,
            "wallet's sequence counter differs from its last entry",
        )
        for w, expected, counter in _rows(I9_WALLET_COUNTER)
    ]
    return found


CHECKS = {
    "I1": check_i1,
    "I2": check_i2,
    "I3": check_i3,
    "I5": check_i5,
    "I6": check_i6,
    "I7": check_i7,
    "I8": check_i8,
    "I9": check_i9,
}
