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

I6_TRIGGER = """
SELECT COUNT(*) FROM pg_trigger
WHERE tgname = 'billing_ledgerentry_append_only' AND NOT tgisinternal AND tgenabled <> 'D'
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
    (count,) = _rows(I6_TRIGGER)[0]
    if count == 1:
        return []
    return [Violation("I6", None, "append-only trigger enabled", "missing or disabled")]


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
    "I9": check_i9,
}
