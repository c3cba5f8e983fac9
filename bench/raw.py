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


# --- The same work: the protocol's six statements -----------------------------------------
#
# ``raw spread`` above is the least a purchase can be (lock, check, reserve, record the
# charge and its event). The service's purchase does more: it sells from the catalog,
# keeps the context's allowance, Billing's hold and reservation history, the event of the
# reservation and the month's usage record. ``raw protocol`` does exactly that work, as
# the service's six statements written by hand in plain psycopg (prepared after their
# fifth run, no ORM, no Python between them beyond the checks), on the real schema of a
# seeded copy of the database: so the service's own cost, the framework's, is what the
# ratio between the two measures, and the real reconcile checks that the raw purchases
# kept every invariant (they are settled after the point like the service's).

PROTOCOL_DATABASE = "bench_rawproto"

SELL_FROM_PLAN = """
WITH plan AS (
    SELECT price_per_hour, monthly_cap, currency FROM cloud_serverplan WHERE id = %(plan)s AND is_active
),
added AS (
    INSERT INTO cloud_server (id, owner_id, wallet_id, name, created_at, paid_until, plan_id, status,
                              operator_reason, unpaid_since, wallet_blocked_since, operator_hold_since,
                              suspended_at, terminated_at)
    SELECT %(server)s, %(owner)s, %(wallet)s, %(name)s, %(now)s, %(until)s, %(plan)s, 'active',
           '', NULL, NULL, NULL, NULL, NULL
    FROM plan RETURNING 1
)
SELECT price_per_hour, monthly_cap, currency, (SELECT count(*) FROM added) FROM plan
"""

CHARGE_USAGE_EVENT = """
WITH c AS (
    INSERT INTO cloud_charge (id, wallet_id, owner_id, amount, currency, description, subject_id,
                              period_start, period_end, transaction_date, created_at, refunded_amount,
                              ledger_entry_id)
    VALUES (%(charge)s, %(wallet)s, %(owner)s, %(price)s, %(currency)s, %(description)s, %(server)s,
            %(now)s, %(until)s, %(now)s, %(now)s, 0, NULL)
), u AS (
    INSERT INTO cloud_usage (service_id, month, wallet_id, owner_id, currency, hours, list_amount,
                             list_exact, cap, amount, closed_amount, closed_hours, closed_until,
                             accrued_until, close_due_at, refunded, updated_at)
    VALUES (%(server)s, %(month)s, %(wallet)s, %(owner)s, %(currency)s, 1, %(price)s, %(price)s, %(cap)s,
            %(price)s, %(price)s, 1, %(until)s, %(until)s, NULL, 0, %(now)s)
    ON CONFLICT (service_id, month) DO UPDATE SET hours = cloud_usage.hours + excluded.hours,
        list_amount = cloud_usage.list_amount + excluded.list_amount,
        list_exact = cloud_usage.list_exact + excluded.list_exact,
        amount = cloud_usage.amount + excluded.amount,
        closed_amount = cloud_usage.closed_amount + excluded.closed_amount,
        closed_hours = cloud_usage.closed_hours + excluded.closed_hours,
        closed_until = excluded.closed_until, accrued_until = excluded.accrued_until,
        updated_at = excluded.updated_at
)
INSERT INTO contracts_outboxmessage (event_id, event_type, handler, payload, wallet_id, status, attempts,
                                     last_error, created_at, available_at, delivered_at)
VALUES (%(event)s, 'ChargesRecorded', 'billing.settle_recorded_charges', %(payload)s, %(wallet)s,
        'pending', 0, '', %(now)s, %(now)s, NULL)
RETURNING id
"""

LOCK_ALLOWANCE = (
    "SELECT owner_id, currency, blocked, amount FROM cloud_allowance WHERE wallet_id = %s FOR NO KEY UPDATE"
)

RESERVE = """
WITH locked AS (
    SELECT id, balance - reserved AS unreserved FROM billing_wallet
    WHERE id = %(wallet)s AND owner_id = %(owner)s AND currency = %(currency)s AND status = 'active'
      AND balance - reserved >= %(price)s
    FOR NO KEY UPDATE
)
UPDATE billing_wallet SET reserved = billing_wallet.reserved + LEAST(%(price)s, locked.unreserved),
    updated_at = %(now)s
FROM locked WHERE billing_wallet.id = locked.id
RETURNING LEAST(%(price)s, locked.unreserved)
"""

HOLD_RESERVATION_EVENT = """
WITH h AS (
    INSERT INTO billing_hold (wallet_id, context, amount, granted_total, captured_total, released_total)
    VALUES (%(wallet)s, 'cloud', %(granted)s, %(granted)s, 0, 0)
    ON CONFLICT (wallet_id, context) DO UPDATE SET amount = billing_hold.amount + EXCLUDED.amount,
        granted_total = billing_hold.granted_total + EXCLUDED.granted_total
), r AS (
    INSERT INTO billing_reservation (id, wallet_id, context, kind, amount, source_id, ledger_entry_id,
                                     created_at)
    VALUES (%(reservation)s, %(wallet)s, 'cloud', 'grant', %(granted)s, NULL, NULL, %(now)s)
)
INSERT INTO contracts_outboxmessage (event_id, event_type, handler, payload, wallet_id, status, attempts,
                                     last_error, created_at, available_at, delivered_at)
VALUES (%(event)s, 'FundsReserved', '', %(payload)s, %(wallet)s, 'done', 0, '', %(now)s, %(now)s, %(now)s)
RETURNING id
"""

SPEND_ALLOWANCE = """
UPDATE cloud_allowance SET amount = amount + %(granted)s - %(price)s,
    granted_total = granted_total + %(granted)s, charged_total = charged_total + %(price)s,
    last_used_at = %(now)s
WHERE wallet_id = %(wallet)s
"""


class ProtocolPurchase:
    """A server bought the protocol's way, with a reservation: six statements, committed."""

    def __init__(self, index: int, params: dict) -> None:
        self.conn = connect(PROTOCOL_DATABASE)
        self.rng = random.Random(index)
        self.wallets = [(owner, uuid.UUID(str(wallet))) for owner, wallet in params["wallets"]]
        self.index = index

    def __call__(self, n: int) -> None:
        import datetime as dt

        owner, wallet = self.rng.choice(self.wallets)
        now = dt.datetime.now(dt.UTC)
        until = now + dt.timedelta(hours=1)
        server, charge = uuid.uuid4(), uuid.uuid4()
        name = f"raw-{self.index}-{n}"
        with self.conn.transaction(), self.conn.cursor() as cur:
            sold = cur.execute(
                SELL_FROM_PLAN,
                {
                    "plan": "s-1vcpu-1gb",
                    "server": server,
                    "owner": owner,
                    "wallet": wallet,
                    "name": name,
                    "now": now,
                    "until": until,
                },
            ).fetchone()
            if sold is None or not sold[3]:
                raise RuntimeError("no such plan")
            price, cap, currency = sold[:3]
            description = f"Server {name} (s-1vcpu-1gb), first hour"
            charged = {
                "charge_id": str(charge),
                "amount": price,
                "transaction_date": now.isoformat(),
                "description": description,
                "subject_id": str(server),
                "period_start": now.isoformat(),
                "period_end": until.isoformat(),
            }
            event = uuid.uuid4()
            cur.execute(
                CHARGE_USAGE_EVENT,
                {
                    "charge": charge,
                    "wallet": wallet,
                    "owner": owner,
                    "price": price,
                    "currency": currency,
                    "description": description,
                    "server": server,
                    "now": now,
                    "until": until,
                    "month": now.date().replace(day=1),
                    "cap": cap,
                    "event": event,
                    "payload": Jsonb(
                        {
                            "event_id": str(event),
                            "occurred_at": now.isoformat(),
                            "wallet_id": str(wallet),
                            "context": "cloud",
                            "currency": currency,
                            "amount": price,
                            "charges": [charged],
                        }
                    ),
                },
            )
            allowance = cur.execute(LOCK_ALLOWANCE, [wallet]).fetchone()
            if allowance is None or allowance[0] != owner or allowance[1] != currency or allowance[2]:
                raise RuntimeError("refused by the allowance")
            granted = 0
            shortfall = price - allowance[3]
            if shortfall > 0:
                row = cur.execute(
                    RESERVE,
                    {"wallet": wallet, "owner": owner, "currency": currency, "price": shortfall, "now": now},
                ).fetchone()
                if row is None:
                    raise InsufficientFunds()
                granted = row[0]
                reservation, event = uuid.uuid4(), uuid.uuid4()
                cur.execute(
                    HOLD_RESERVATION_EVENT,
                    {
                        "wallet": wallet,
                        "granted": granted,
                        "reservation": reservation,
                        "now": now,
                        "event": event,
                        "payload": Jsonb(
                            {
                                "event_id": str(event),
                                "occurred_at": now.isoformat(),
                                "reservation_id": str(reservation),
                                "wallet_id": str(wallet),
                                "context": "cloud",
                                "amount": granted,
                                "currency": currency,
                            }
                        ),
                    },
                )
            cur.execute(SPEND_ALLOWANCE, {"granted": granted, "price": price, "now": now, "wallet": wallet})

    def close(self) -> dict:
        self.conn.close()
        return {}


def protocol_op(index: int, params: dict) -> ProtocolPurchase:
    return ProtocolPurchase(index, params)
