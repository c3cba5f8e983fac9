"""Billing in the operator console. Money is read-only here: no form edits a balance,
a hold or a ledger entry, and nothing is deleted. A balance changes only through an
adjustment (the wallet's "Adjust balance" page), which books a ledger entry through
``services.wallet_adjust`` under the same invariants as every other write.

One module per concern; importing them registers every model admin (Django's admin
autodiscovery imports this package):

- ``wallets``: the wallet page, its "Adjust balance" page and freezing; the base of the
  tables whose rows belong to a wallet.
- ``ledger``: ledger entries, settled charges (and the page that refunds one), holds and
  reservation records.
- ``bookings``: top-ups (confirmed or failed by an operator), adjustments and refunds.
- ``invoices``: invoices, their lines and the number series.
- ``payments``: card payments: the provider's events, parked payments (resolved here),
  payment reversals, saved cards, automatic top-ups and customers at the provider, each
  linked to the provider's dashboard.
- ``forms``: the adjustment and refund forms, and the page that shows and books them."""

from . import bookings, invoices, ledger, payments, wallets

__all__ = ["bookings", "invoices", "ledger", "payments", "wallets"]
