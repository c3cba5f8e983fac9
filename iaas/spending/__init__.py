"""The selling side's spending mechanism, written once for Cloud and Hosting: allowance,
charge and release tables (abstract) and the purchase protocol against Billing's contract."""
