"""Billing: wallets, the append-only ledger, reservations (holds), top-ups and invoices."""
