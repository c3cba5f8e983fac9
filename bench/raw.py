"""The raw SQL baseline: the logical work of a purchase as plain psycopg statements.

Lock the wallet row, check the available balance, update it, insert the charge and the
outbox row, commit: one round trip per statement, like the service layer, but no ORM,
no Python between the statements beyond the check, and psycopg's prepared statements.
Its own tables (``raw_*``) in the ``bench_raw`` database mirror the real ones' columns
and indexes. ``spread`` picks a random wallet among many; ``one-row`` puts every
purchase on wallet 1: the single-row limit a hot wallet meets.
"""

from __future__ import annotations

import random
import uuid

from psycopg.types.json import Jsonb

from .common import connect

DATABASE = "bench_raw"
PRICE = 4

SCHEMA = """
DROP TABLE IF EXISTS raw_outbox, raw_charge, raw_wallet;
CREATE TABLE raw_wallet (
    id bigint PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance >= 0),
    reserved bigint NOT NULL CHECK (reserved >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (reserved <= balance)
);
CREATE TABLE raw_charge (
    id uuid PRIMARY KEY,
    wallet_id bigint NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    currency varchar(3) NOT NULL,
    description varchar(255) NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX raw_charge_wallet ON raw_charge (wallet_id);
CREATE TABLE raw_outbox (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL,
    event_type varchar(100) NOT NULL,
    handler varchar(200) NOT NULL,
    payload jsonb NOT NULL,
    wallet_id bigint,
    status varchar(10) NOT NULL DEFAULT 'pending',
    created_at timestamptz NOT NULL,
    UNIQUE (event_id, handler)
);
CREATE INDEX raw_outbox_wallet ON raw_outbox (wallet_id);
CREATE INDEX raw_outbox_pending ON raw_outbox (created_at, id) WHERE status = 'pending';
"""


def prepare(*, wallets: int) -> None:
    with connect(DATABASE, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(
            "INSERT INTO raw_wallet (id, balance, reserved) "
            "SELECT g, 1000000000000, 0 FROM generate_series(1, %s) g",
            [wallets],
        )
        conn.execute("ANALYZE")


class InsufficientFunds(Exception):
    pass


class RawPurchase:
    def __init__(self, index: int, params: dict) -> None:
        self.conn = connect(DATABASE)
        self.rng = random.Random(index)
        self.wallets = params["wallets"]
        self.one_row = params["shape"] == "one-row"

    def __call__(self, n: int) -> None:
        wallet_id = 1 if self.one_row else self.rng.randint(1, self.wallets)
        charge_id = uuid.uuid4()
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(
                "SELECT balance, reserved FROM raw_wallet WHERE id = %s FOR NO KEY UPDATE", [wallet_id]
            )
            balance, reserved = cur.fetchone()
            if balance - reserved < PRICE:
                raise InsufficientFunds()
            cur.execute(
                "UPDATE raw_wallet SET reserved = reserved + %s, updated_at = now() WHERE id = %s",
                [PRICE, wallet_id],
            )
            cur.execute(
                "INSERT INTO raw_charge (id, wallet_id, amount, currency, description, created_at) "
                "VALUES (%s, %s, %s, 'EUR', %s, now())",
                [charge_id, wallet_id, PRICE, f"raw purchase {n}"],
            )
            cur.execute(
                "INSERT INTO raw_outbox (event_id, event_type, handler, payload, wallet_id, created_at) "
                "VALUES (%s, 'ChargeRecorded', 'settle', %s, %s, now())",
                [
                    uuid.uuid4(),
                    Jsonb({"charge_id": str(charge_id), "wallet_id": wallet_id, "amount": PRICE}),
                    wallet_id,
                ],
            )

    def close(self) -> dict:
        self.conn.close()
        return {}


def purchase_op(index: int, params: dict) -> RawPurchase:
    return RawPurchase(index, params)


def check() -> list[str]:
    """The raw tables' invariants: reserved is the sum of the charges, never above the
    balance, one outbox row per charge."""
    problems = []
    with connect(DATABASE) as conn:
        (bad,) = conn.execute(
            "SELECT count(*) FROM raw_wallet w LEFT JOIN "
            "(SELECT wallet_id, sum(amount) AS total FROM raw_charge GROUP BY wallet_id) c "
            "ON c.wallet_id = w.id WHERE w.reserved <> COALESCE(c.total, 0) OR w.reserved > w.balance"
        ).fetchone()
        if bad:
            problems.append(f"{bad} raw wallets whose reserved differs from their charges")
        charges, events = conn.execute(
            "SELECT (SELECT count(*) FROM raw_charge), (SELECT count(*) FROM raw_outbox)"
        ).fetchone()
        if charges != events:
            problems.append(f"{charges} raw charges but {events} outbox rows")
    return problems
