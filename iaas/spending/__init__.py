"""The selling-context kit, written once for every context that sells out of a wallet
(Cloud, Hosting, Storage): the allowance, charge, release and usage tables (abstract),
the purchase protocol against Billing's contract (the Spender), the life of metered
services, the metering and settlement batches, and the admin and API bases. A context
plugs in through its AppConfig (docs/adding-a-context.md)."""
