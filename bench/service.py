"""Purchases through the contexts' services, one process per client, and what surrounds
them: customers and wallets seeded in SQL (consistently: a succeeded top-up and its
ledger entry per credit), a settlement worker, the drain and the invariant check.

Shapes:
- ``spread``: every purchase is a server (Cloud) on a random wallet out of 10,000;
- ``hot``: every purchase is on one wallet, alternating a server (Cloud) and a hosting
  subscription (Hosting), so the two contexts meet on that wallet.
"""

from __future__ import annotations

import random
import time
import uuid

from .common import connect, django_setup

SERVER_PLAN = "s-1vcpu-1gb"  # 0.01 EUR an hour
HOSTING_PLAN = "web-starter"  # 3.99 EUR a month
TOP_UP = 100_000_000  # IAAS_MAX_TOP_UP: the largest single top-up the API accepts


# --- seeding (plain SQL, in the parent) ----------------------------------------------------

SEED = """
WITH owners AS (
    INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                           is_staff, is_active, date_joined)
    SELECT '!', false, %(tag)s || '-' || g, '', '', '', false, true, now()
    FROM generate_series(1, %(wallets)s) g
    RETURNING id
), wallets AS (
    INSERT INTO billing_wallet (id, owner_id, currency, status, balance, reserved, ledger_sequence,
                                created_at, updated_at)
    SELECT gen_random_uuid(), id, 'EUR', 'active', %(amount)s::bigint * %(top_ups)s, 0, %(top_ups)s,
           now(), now()
    FROM owners
    RETURNING id, owner_id
), credits AS (
    SELECT w.id AS wallet_id, w.owner_id, k, gen_random_uuid() AS top_up_id, gen_random_uuid() AS entry_id
    FROM wallets w CROSS JOIN generate_series(1, %(top_ups)s) k
), entries AS (
    INSERT INTO billing_ledgerentry (id, wallet_id, sequence, kind, amount, balance_after,
                                     transaction_date, posted_at, description, reference, context, source_id)
    SELECT entry_id, wallet_id, k, 'top_up', %(amount)s, %(amount)s::bigint * k, now(), now(),
           'Top-up via sandbox', 'top-up:' || top_up_id, '', top_up_id
    FROM credits
    RETURNING 1
), allowances AS (
    -- Customers who bought before: their Cloud and Hosting allowance rows exist (empty),
    -- so a purchase takes the steady-state path, not the first-purchase one.
    INSERT INTO cloud_allowance (wallet_id, owner_id, currency, amount, granted_total, charged_total,
                                 released_total, created_at, last_used_at, blocked)
    SELECT id, owner_id, 'EUR', 0, 0, 0, 0, now(), now(), false FROM wallets WHERE %(allowances)s
    RETURNING 1
), hosting_allowances AS (
    INSERT INTO hosting_allowance (wallet_id, owner_id, currency, amount, granted_total, charged_total,
                                   released_total, created_at, last_used_at, blocked)
    SELECT id, owner_id, 'EUR', 0, 0, 0, 0, now(), now(), false FROM wallets WHERE %(allowances)s
    RETURNING 1
), top_ups AS (
    INSERT INTO billing_topup (id, wallet_id, amount, currency, status, provider, provider_reference,
                               reference, created_at, completed_at, ledger_entry_id)
    SELECT top_up_id, wallet_id, %(amount)s, 'EUR', 'succeeded', 'sandbox', '',
           'bench-seed-' || k, now(), now(), entry_id
    FROM credits
    RETURNING 1
)
-- (PostgreSQL runs every data-modifying CTE to completion, read or not.)
SELECT w.owner_id, w.id FROM wallets w
ORDER BY w.owner_id
"""


def seed(
    database: str, *, tag: str, wallets: int, amount: int, top_ups: int = 1, allowances: bool = True
) -> list[tuple[int, str]]:
    """``wallets`` customers with one EUR wallet each, credited ``top_ups`` times by
    ``amount``, with empty Cloud and Hosting allowance rows unless ``allowances`` is
    false. Returns (owner id, wallet id) pairs."""
    with connect(database) as conn:
        rows = conn.execute(
            SEED,
            {"tag": tag, "wallets": wallets, "amount": amount, "top_ups": top_ups, "allowances": allowances},
        ).fetchall()
        conn.execute("ANALYZE")
    return [(owner, str(wallet)) for owner, wallet in rows]


# --- the purchase workers -------------------------------------------------------------------


class Purchases:
    """Built in a worker process: Django set up against the point's database, with the
    point's reserve-ahead chunk and delivery setting in the environment."""

    def __init__(self, index: int, params: dict) -> None:
        django_setup(params["database"], params.get("env"))
        from iaas.cloud import services as cloud
        from iaas.hosting import services as hosting

        self.cloud, self.hosting = cloud, hosting
        self.index = index
        self.tag = f"{params['tag']}-{index}"
        self.rng = random.Random(f"{params['tag']}-{index}")
        self.wallets = [(owner, uuid.UUID(wallet)) for owner, wallet in params["wallets"]]
        self.shape = params["shape"]
        self.kinds = {"cloud": 0, "hosting": 0}

    def __call__(self, n: int) -> None:
        if self.shape == "spread":
            owner_id, wallet_id = self.rng.choice(self.wallets)
            self.server(owner_id, wallet_id, n)
            return
        owner_id, wallet_id = self.wallets[0]
        if (self.index + n) % 2 == 0:
            self.server(owner_id, wallet_id, n)
        else:
            self.kinds["hosting"] += 1
            self.hosting.subscription_create(
                owner_id=owner_id,
                wallet_id=wallet_id,
                domain=f"{self.tag}-{n}.bench.example".replace("--", "-m"),
                plan_id=HOSTING_PLAN,
            )

    def server(self, owner_id: int, wallet_id: uuid.UUID, n: int) -> None:
        self.kinds["cloud"] += 1
        self.cloud.server_create(owner_id=owner_id, wallet_id=wallet_id, name=f"b{n}", plan_id=SERVER_PLAN)

    def close(self) -> dict:
        return {"kinds": self.kinds}


def purchase_op(index: int, params: dict) -> Purchases:
    return Purchases(index, params)


class Settler:
    """The delivery worker, as ``deliver_events --loop`` runs it: ``batched`` (the
    default: one wallet's pending settlements in one transaction, up to 100) or
    ``per-row`` (one outbox row per transaction)."""

    def __init__(self, index: int, params: dict) -> None:
        django_setup(params["database"], params.get("env"))
        from iaas.contracts import bus

        self.bus = bus
        self.batched = params.get("settler") == "batched"
        self.delivered = 0

    def __call__(self, n: int) -> None:
        if n < 0:  # no warm-up: there is nothing to deliver yet
            return
        batch_size = 100 if self.batched else 1
        delivered = self.bus.deliver_pending(limit=100, batch_size=batch_size).delivered
        self.delivered += delivered
        if not delivered:
            time.sleep(0.005)

    def close(self) -> dict:
        return {"delivered": self.delivered}


def settler_op(index: int, params: dict) -> Settler:
    return Settler(index, params)


# --- after a point (in a Django child process) -----------------------------------------------


def drain_and_reconcile() -> dict:
    """Deliver everything still pending (timed), then check every invariant."""
    from iaas.contracts import bus
    from iaas.operations.reconciliation import reconcile

    backlog = bus.pending_count()
    started = time.perf_counter()
    # As deliver_events --loop settles (a wallet's pending charges in one transaction).
    report = bus.deliver_pending(batch_size=100)
    drain_s = time.perf_counter() - started
    result = reconcile()
    return {
        "backlog": backlog,
        "drained": report.delivered,
        "drain_failed": report.failed,
        "drain_s": round(drain_s, 2),
        "settled_per_s": round(report.delivered / drain_s, 1) if drain_s and report.delivered else None,
        "reconcile_ok": result.ok,
        "pending_after": result.pending_events,
        "violations": {k: [v.as_dict() for v in vs[:5]] for k, vs in result.violations.items() if vs},
    }


def statements_per_purchase(owner_id: int, wallet_id: str) -> dict:
    """Statements of a purchase with a reservation, one inside the allowance, and one
    settlement, counted as production runs them (the purchase is the outermost
    transaction). Runs on a wallet with an existing Cloud allowance row."""
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from iaas.cloud import services as cloud
    from iaas.contracts import bus

    def count(call) -> int:
        with CaptureQueriesContext(connection) as captured:
            call()
        return sum(q["sql"] not in ("BEGIN", "COMMIT") for q in captured.captured_queries)

    wallet = uuid.UUID(wallet_id)

    def buy():
        cloud.server_create(owner_id=owner_id, wallet_id=wallet, name="q", plan_id=SERVER_PLAN)

    buy()  # the allowance row exists from now on
    bus.deliver_pending()
    with_reservation = count(buy)
    settlement = count(bus.deliver_next)
    settings.IAAS_RESERVE_AHEAD = {"cloud": 100, "hosting": 0}
    buy()  # reserves 100 ahead
    inside_allowance = count(buy)
    bus.deliver_pending()
    return {
        "purchase_with_reservation": with_reservation,
        "purchase_inside_allowance": inside_allowance,
        "settlement_per_charge": settlement,
    }
