"""Fault injection against a gunicorn server on PostgreSQL: what is lost when things break.

    .venv/bin/python -m bench.faults                              # every scenario, ~3 minutes
    .venv/bin/python -m bench.faults --quick                      # SIGKILL 3 times, shorter loads
    .venv/bin/python -m bench.faults --app-dir /work/wt-api --only sigkill,idempotent-retry

Everything runs on a private PostgreSQL (var/bench-pg, its own port, started here) and
a gunicorn of our own, so killing or restarting them harms no one. For each scenario
fresh customers (a wallet each, modest money, so refusals happen too) run purchase
(server, hosting) and top-up load, every POST with an Idempotency-Key and retried with
the same key after a timeout, a dropped connection, a 503 or a 409 in-progress, until a
definitive answer. The fault is injected, the system recovered, then what an operator
runs: deliver-pending (retrying failed rows) and reconcile. Then the audit, from the
database against what the clients were told:

- lost: a purchase or top-up acknowledged (201) that is not in the database;
- doubled: more than one purchase or top-up for one key; a purchase with != 1 charge;
- settlements lost or doubled: a charge with no capture, a charge booked twice;
- books: each wallet's balance against the client's own sum of acknowledged top-ups
  minus acknowledged purchases (after every charge settled);
- overspend: reconcile's I2 (0 <= reserved <= balance);
- 500s: any 500 seen is unexplained; a 503 must be problem+json.

Scenarios: ``sigkill`` (gunicorn SIGKILLed mid-load, ten times in a row), ``pg-restart``
(PostgreSQL stopped mid-load, immediate mode as after a crash, then started: requests
meanwhile must get a clean 503), ``handler-down`` (Billing's event handlers fail for a
while: settlements pile up as pending, then drain), ``idempotent-retry`` (the client
times out after 15 ms and retries every purchase with the same key).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from .client import Api, Gunicorn, app_env, deliver_and_reconcile, free_port, manage, open_wallet, register
from .common import RESULTS, ROOT, write_json
from .privatepg import PrivatePostgres

DATABASE = "bench_faults"
HOOKS = ROOT / "bench" / "gunicorn_faults.py"
START_BALANCE = 5_000  # 50.00 EUR: a dozen hosting plans, then refusals (and top-ups)
TOP_UP = 1_000
FINAL = {200, 201, 400, 402, 404, 409, 422}


@dataclass
class Op:
    customer: int
    kind: str  # server, hosting, top_up
    key: str
    path: str
    body: dict
    attempts: int = 0
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unclean_503: int = 0
    final: int | None = None
    code: str = ""
    result_id: str | None = None
    replayed: bool = False


class Customer(threading.Thread):
    """One customer's script: a loop of purchases and top-ups until told to stop; every
    operation retried with the same Idempotency-Key until it has a definitive answer."""

    def __init__(self, index: int, api: Api, wallet: str, stop: threading.Event, *, timeout: float, tag: str):
        super().__init__(daemon=True)
        self.index, self.api, self.wallet, self.stop, self.timeout, self.tag = (
            index,
            api,
            wallet,
            stop,
            timeout,
            tag,
        )
        self.rng = random.Random(f"{tag}-{index}")
        self.ops: list[Op] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            roll = self.rng.random()
            key = f"{self.tag}-{self.index}-{n}-{uuid.uuid4().hex[:6]}"
            if roll < 0.15:
                op = Op(
                    self.index, "top_up", key, f"/api/v1/wallets/{self.wallet}/top-ups/", {"amount": TOP_UP}
                )
            elif roll < 0.6:
                body = {"name": f"s{n}", "plan": "s-1vcpu-1gb", "wallet": self.wallet}
                op = Op(self.index, "server", key, "/api/v1/cloud/servers/", body)
            else:
                body = {"domain": f"{self.tag}-{self.index}-{n}.bench.example", "plan": "web-starter"}
                op = Op(
                    self.index,
                    "hosting",
                    key,
                    "/api/v1/hosting/subscriptions/",
                    {**body, "wallet": self.wallet},
                )
            self.ops.append(op)
            self.execute(op)

    def execute(self, op: Op, budget: float = 120) -> None:
        deadline = time.monotonic() + budget
        delay, timeout = 0.05, self.timeout
        while True:
            op.attempts += 1
            try:
                response = self.api.request("POST", op.path, op.body, key=op.key, timeout=timeout)
            except (OSError, http.client.HTTPException) as error:
                op.errors.append("timeout" if isinstance(error, TimeoutError) else type(error).__name__)
                timeout = min(timeout * 2, 30)  # a patient client after all
            else:
                op.statuses.append(response.status)
                if response.status == 503 and "problem+json" not in response.content_type:
                    op.unclean_503 += 1
                if response.status in FINAL and response.problem_code != "idempotency_request_in_progress":
                    op.final, op.code, op.replayed = response.status, response.problem_code, response.replayed
                    if response.status == 201:
                        op.result_id = response.body["id"]
                    return
            if time.monotonic() > deadline:
                return  # gave up: reported as such
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


# --- the audit -------------------------------------------------------------------------------


def audit(url: str, customers: list[dict], ops: list[Op], prices: dict[str, int]) -> dict:
    acked = {
        kind: [op for op in ops if op.kind == kind and op.final == 201]
        for kind in ("server", "hosting", "top_up")
    }
    owners = [c["owner_id"] for c in customers]
    wallets = [c["wallet"] for c in customers]
    found: dict[str, int] = {}
    with psycopg.connect(url) as conn:

        def one(sql: str, *params) -> int:
            return conn.execute(sql, params).fetchone()[0]

        found["lost_servers"] = len(acked["server"]) - one(
            "SELECT count(*) FROM cloud_server WHERE id = ANY(%s::uuid[])",
            [op.result_id for op in acked["server"]],
        )
        found["lost_subscriptions"] = len(acked["hosting"]) - one(
            "SELECT count(*) FROM hosting_subscription WHERE id = ANY(%s::uuid[])",
            [op.result_id for op in acked["hosting"]],
        )
        found["lost_top_ups"] = len(acked["top_up"]) - one(
            "SELECT count(*) FROM billing_topup WHERE id = ANY(%s::uuid[]) AND status = 'succeeded'",
            [op.result_id for op in acked["top_up"]],
        )
        servers = one("SELECT count(*) FROM cloud_server WHERE owner_id = ANY(%s)", owners)
        subscriptions = one("SELECT count(*) FROM hosting_subscription WHERE owner_id = ANY(%s)", owners)
        top_ups = one("SELECT count(*) FROM billing_topup WHERE wallet_id = ANY(%s::uuid[])", wallets)
        # Committed but never acknowledged: a double (a retry that bought again), or an
        # operation the client gave up on.
        found["unacknowledged_purchases"] = (
            servers + subscriptions - len(acked["server"]) - len(acked["hosting"])
        )
        found["unacknowledged_top_ups"] = top_ups - len(customers) - len(acked["top_up"])
        found["doubled_servers"] = one(
            "SELECT count(*) FROM (SELECT 1 FROM cloud_server WHERE owner_id = ANY(%s) "
            "GROUP BY owner_id, name HAVING count(*) > 1) d",
            owners,
        )
        found["purchases_without_one_charge"] = one(
            "SELECT count(*) FROM (SELECT s.id FROM cloud_server s "
            "LEFT JOIN cloud_charge c ON c.subject_id = s.id "
            "WHERE s.owner_id = ANY(%s) GROUP BY s.id HAVING count(c.id) <> 1) x",
            owners,
        ) + one(
            "SELECT count(*) FROM (SELECT s.id FROM hosting_subscription s "
            "LEFT JOIN hosting_charge c ON c.subject_id = s.id "
            "WHERE s.owner_id = ANY(%s) GROUP BY s.id HAVING count(c.id) <> 1) x",
            owners,
        )
        found["settlements_lost"] = sum(
            one(
                f"SELECT count(*) FROM {table} c LEFT JOIN billing_reservation r "
                "ON r.kind = 'capture' AND r.source_id = c.id WHERE c.owner_id = ANY(%s) AND r.id IS NULL",
                owners,
            )
            for table in ("cloud_charge", "hosting_charge")
        )
        found["settlements_doubled"] = one(
            "SELECT count(*) FROM (SELECT source_id FROM billing_ledgerentry WHERE kind = 'charge' "
            "AND wallet_id = ANY(%s::uuid[]) GROUP BY source_id HAVING count(*) > 1) d",
            wallets,
        )
        balances = dict(
            conn.execute(
                "SELECT id::text, balance FROM billing_wallet WHERE id = ANY(%s::uuid[])", [wallets]
            ).fetchall()
        )
    books = 0
    for customer in customers:
        mine = [op for op in ops if op.customer == customer["index"] and op.final == 201]
        expected = START_BALANCE + sum(TOP_UP if op.kind == "top_up" else -prices[op.kind] for op in mine)
        books += balances[customer["wallet"]] != expected
    found["wallets_whose_books_disagree"] = books
    return found


def tally(ops: list[Op]) -> dict:
    statuses = Counter(s for op in ops for s in op.statuses)
    finals = Counter(f"{op.final or 'gave up'}{' ' + op.code if op.code else ''}" for op in ops)
    errors = Counter(e for op in ops for e in op.errors)
    return {
        "operations": len(ops),
        "attempts": sum(op.attempts for op in ops),
        "final": dict(finals),
        "statuses_seen": dict(statuses),
        "connection_errors": dict(errors),
        "replayed_201s": sum(op.replayed for op in ops if op.final == 201),
        "gave_up": sum(op.final is None for op in ops),
        "http_500s": statuses.get(500, 0),
        "unclean_503s": sum(op.unclean_503 for op in ops),
        "clean_503s": statuses.get(503, 0) - sum(op.unclean_503 for op in ops),
    }


# --- the run -----------------------------------------------------------------------------------


class Harness:
    def __init__(self, args) -> None:
        self.args = args
        self.app_dir = args.app_dir.resolve()
        self.pg = PrivatePostgres(args.pg_port or free_port())
        self.flag = self.pg.dir / "handlers-down"
        self.url = self.pg.url(DATABASE)
        self.env = app_env(self.app_dir, self.url, BENCH_FAULT_FLAG=str(self.flag))
        self.port = free_port()
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.server_log = open(RESULTS / "faults-gunicorn.log", "w")  # noqa: SIM115 (closed in close())
        self.server = Gunicorn(
            self.app_dir, self.env, port=self.port, workers=args.workers, config=HOOKS, log=self.server_log
        )
        self.prices: dict[str, int] = {}

    def setup(self) -> None:
        self.flag.unlink(missing_ok=True)
        self.pg.start()
        self.pg.recreate_database(DATABASE)
        manage(self.app_dir, self.env, "migrate", "--no-input", "-v0")
        self.server.start()
        api = Api(self.port)
        plans = api.request("GET", "/api/v1/cloud/plans/").body
        hosting = api.request("GET", "/api/v1/hosting/plans/").body
        plans = plans["results"] if isinstance(plans, dict) else plans
        hosting = hosting["results"] if isinstance(hosting, dict) else hosting
        self.prices["server"] = next(p["price_per_hour"] for p in plans if p["id"] == "s-1vcpu-1gb")
        self.prices["hosting"] = next(p["price_per_month"] for p in hosting if p["id"] == "web-starter")

    def close(self) -> None:
        self.server.stop()
        self.pg.stop("fast")
        self.flag.unlink(missing_ok=True)
        self.server_log.close()

    def customers(self, tag: str, count: int) -> list[dict]:
        made = []
        for index in range(count):
            api = register(self.port, f"{tag}-{index}-{uuid.uuid4().hex[:6]}")
            wallet = open_wallet(api, amount=START_BALANCE)
            me = api.request("GET", f"/api/v1/wallets/{wallet}/").body
            made.append({"index": index, "api": api, "wallet": wallet, "balance": me["balance"]})
        with psycopg.connect(self.url) as conn:
            for customer in made:
                customer["owner_id"] = conn.execute(
                    "SELECT owner_id FROM billing_wallet WHERE id = %s", [customer["wallet"]]
                ).fetchone()[0]
        return made

    def pending_settlements(self) -> int:
        with psycopg.connect(self.url) as conn:
            return conn.execute(
                "SELECT count(*) FROM contracts_outboxmessage "
                "WHERE status <> 'done' AND handler LIKE 'iaas.billing.%%'"
            ).fetchone()[0]

    def scenario(self, name: str, inject, *, timeout: float = 10.0) -> dict:
        log(f"scenario {name}")
        started = time.monotonic()
        customers = self.customers(name, self.args.customers)
        stop = threading.Event()
        threads = [
            Customer(c["index"], c["api"], c["wallet"], stop, timeout=timeout, tag=name) for c in customers
        ]
        for thread in threads:
            thread.start()
        notes = inject() or {}
        stop.set()
        for thread in threads:
            thread.join(timeout=180)
        ops = [op for thread in threads for op in thread.ops]
        after = deliver_and_reconcile(self.app_dir, self.env)
        found = audit(self.url, customers, ops, self.prices)
        result = {
            "scenario": name,
            "seconds": round(time.monotonic() - started, 1),
            **tally(ops),
            **found,
            **notes,
            "after": after,
        }
        result["nothing_lost"] = (
            after["reconcile_ok"]
            and after["pending_after"] == 0
            and result["http_500s"] == 0
            and result["unclean_503s"] == 0
            and result["gave_up"] == 0
            and all(value == 0 for key, value in found.items())
        )
        log(f"  {result}")
        return result

    # --- the faults --------------------------------------------------------------------------

    def sigkill(self) -> dict:
        kills = 3 if self.args.quick else 10
        for number in range(kills):
            time.sleep(self.args.load_seconds / 4)
            self.server.kill()
            time.sleep(0.3)
            self.server.start()
            log(f"  SIGKILL {number + 1}/{kills}: gunicorn killed and restarted")
        time.sleep(self.args.load_seconds / 4)
        return {"kills": kills}

    def pg_restart(self) -> dict:
        time.sleep(self.args.load_seconds / 2)
        self.pg.stop("immediate")
        log("  PostgreSQL stopped (immediate: no checkpoint, like a crash)")
        time.sleep(3)
        self.pg.start()
        self.pg.wait_up()
        log("  PostgreSQL started again (crash recovery from the WAL)")
        time.sleep(self.args.load_seconds / 2)
        return {"postgres_down_s": 3}

    def handler_down(self) -> dict:
        time.sleep(self.args.load_seconds / 4)
        self.flag.touch()
        log("  Billing's event handlers down")
        time.sleep(self.args.load_seconds)
        peak = self.pending_settlements()
        self.flag.unlink()
        log(f"  handlers back; {peak} settlements pending")
        time.sleep(self.args.load_seconds / 4)
        return {"pending_settlements_at_peak": peak, "pending_before_drain": self.pending_settlements()}

    def idempotent_retry(self) -> dict:
        time.sleep(self.args.load_seconds)
        return {}


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


SCENARIOS = ["sigkill", "pg-restart", "handler-down", "idempotent-retry"]


def table(results: list[dict]) -> str:
    lines = [
        "| scenario | operations | 201 (replayed) | 402 | clean 503 | 500 | conn. errors | lost | doubled "
        "| settlements lost / doubled | books off | reconcile | nothing lost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- |",
    ]
    for r in results:
        finals = r["final"]
        created = sum(v for k, v in finals.items() if k.startswith("201"))
        refused = sum(v for k, v in finals.items() if k.startswith("402"))
        lost = r["lost_servers"] + r["lost_subscriptions"] + r["lost_top_ups"]
        doubled = r["doubled_servers"] + r["unacknowledged_purchases"] + r["unacknowledged_top_ups"]
        doubled += r["purchases_without_one_charge"]
        lines.append(
            f"| {r['scenario']} | {r['operations']} | {created} ({r['replayed_201s']}) | {refused} | "
            f"{r['clean_503s']} | {r['http_500s']} | {sum(r['connection_errors'].values())} | "
            f"{lost} | {doubled} | "
            f"{r['settlements_lost']} / {r['settlements_doubled']} | {r['wallets_whose_books_disagree']} | "
            f"{'ok' if r['after']['reconcile_ok'] else 'FAILED'} | {'yes' if r['nothing_lost'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--app-dir", type=Path, default=ROOT, help="the checkout whose app to serve (read-only)"
    )
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="3 kills instead of 10, shorter loads")
    parser.add_argument("--customers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--pg-port", type=int, help="port of the private PostgreSQL (default: a free one)")
    parser.add_argument("--load-seconds", type=float, help="load around each fault (default 8, quick 4)")
    args = parser.parse_args(argv)
    args.load_seconds = args.load_seconds or (4.0 if args.quick else 8.0)
    harness = Harness(args)
    results = []
    try:
        harness.setup()
        runs = {
            "sigkill": (harness.sigkill, 10.0),
            "pg-restart": (harness.pg_restart, 10.0),
            "handler-down": (harness.handler_down, 10.0),
            "idempotent-retry": (harness.idempotent_retry, 0.015),
        }
        for name in args.only.split(","):
            inject, timeout = runs[name]
            results.append(harness.scenario(name, inject, timeout=timeout))
    finally:
        harness.close()
    print()
    print(table(results))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    write_json(RESULTS / f"faults-{stamp}.json", {"app_dir": str(harness.app_dir), "scenarios": results})
    return 0 if results and all(r["nothing_lost"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
