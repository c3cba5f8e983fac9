"""I9 in the database (PostgreSQL): a constraint trigger refuses a ledger entry whose
``sequence`` is not its wallet's previous entry's + 1, or whose ``balance_after`` is not
the previous entry's ``balance_after`` + its ``amount`` (a wallet's first entry follows
0). A bug in Python that books out of turn fails its transaction instead of breaking the
books.

AFTER INSERT ... FOR EACH ROW, not deferred: row events fire at the end of the statement,
so a multi-row INSERT (settlement's bulk_create of one wallet's entries) sees all its rows
and each finds the one before it. The look-up is one probe of ledger_sequence_unique,
whose covering index (0005) holds balance_after.

Skipped on SQLite, like the covering index: there reconcile checks the same rule (I9).
Like every trigger it does not fire under ``session_replication_role = replica``, which is
how tests plant drift for reconcile to find, and how a bulk load of consistent history
(a restore, a benchmark's seed) may skip it.
"""

from django.db import migrations

POSTGRES_FORWARD = [
    """
CREATE OR REPLACE FUNCTION iaas_ledger_chain_check() RETURNS trigger AS $$
DECLARE
    previous_balance bigint := 0;
BEGIN
    IF NEW.sequence > 1 THEN
        SELECT balance_after INTO previous_balance FROM billing_ledgerentry
        WHERE wallet_id = NEW.wallet_id AND sequence = NEW.sequence - 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'ledger_chain (I9): wallet % has no entry % before entry %',
                NEW.wallet_id, NEW.sequence - 1, NEW.sequence
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_chain',
                      TABLE = 'billing_ledgerentry';
        END IF;
    END IF;
    IF NEW.balance_after <> previous_balance + NEW.amount THEN
        RAISE EXCEPTION 'ledger_chain (I9): wallet % entry % has balance_after %, expected % (previous % + amount %)',
            NEW.wallet_id, NEW.sequence, NEW.balance_after, previous_balance + NEW.amount,
            previous_balance, NEW.amount
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_chain', TABLE = 'billing_ledgerentry';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
""",
    """
CREATE CONSTRAINT TRIGGER billing_ledgerentry_chain
    AFTER INSERT ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION iaas_ledger_chain_check()
""",
]

POSTGRES_BACKWARD = [
    "DROP TRIGGER IF EXISTS billing_ledgerentry_chain ON billing_ledgerentry",
    "DROP FUNCTION IF EXISTS iaas_ledger_chain_check()",
]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in POSTGRES_FORWARD:
            schema_editor.execute(statement, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in POSTGRES_BACKWARD:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("billing", "0009_refunds_append_only")]
    operations = [migrations.RunPython(forward, backward)]
