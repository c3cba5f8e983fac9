"""Profile the purchase path (and its settlement) with pyinstrument, in one process.

    .venv/bin/python -m bench.profile [--purchases 300] [--shape spread|hot] [--inline]
    .venv/bin/python -m bench.profile --http      # the same purchase through the REST API

Runs against a fresh ``bench_profile`` database seeded like the throughput run's,
prints pyinstrument's call tree and writes bench/results/profile-<shape>.html. Also
prints where the wall time of one purchase goes: Python, or waiting for PostgreSQL.
"""

from __future__ import annotations

import argparse
import time
import uuid

from .common import RESULTS, TEMPLATE_DB, django_setup, migrate_template, recreate_database
from .service import HOSTING_PLAN, SERVER_PLAN, seed

DATABASE = "bench_profile"


def seeded() -> tuple[list, list]:
    migrate_template()
    recreate_database(DATABASE, template=TEMPLATE_DB)
    return (
        seed(DATABASE, tag="spread", wallets=10_000, amount=100_000),
        seed(DATABASE, tag="hot", wallets=3, amount=100_000_000, top_ups=10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--purchases", type=int, default=300)
    parser.add_argument("--shape", choices=["spread", "hot"], default="spread")
    parser.add_argument("--inline", action="store_true", help="settle in the request (delivery on commit)")
    parser.add_argument("--chunk", action="store_true", help="reserve-ahead chunks")
    parser.add_argument(
        "--http",
        action="store_true",
        help="POST /api/v1/cloud/servers/ with an Idempotency-Key through Django's test client "
        "(middleware, authentication, throttles in Redis, serializers; no gunicorn)",
    )
    args = parser.parse_args()
    spread, hot = seeded()
    env = {"IAAS_DELIVER_ON_COMMIT": "1" if args.inline else "0"}
    if args.http:
        env |= {
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "IAAS_CACHE_KEY_PREFIX": "iaas-bench",
            "IAAS_THROTTLE_USER": "10000000/minute",
        }
    if args.chunk:
        env |= {"IAAS_RESERVE_AHEAD_CLOUD": "1000", "IAAS_RESERVE_AHEAD_HOSTING": "399000"}
    django_setup(DATABASE, env)

    import random

    from django.db import connection
    from pyinstrument import Profiler

    from iaas.cloud import services as cloud
    from iaas.contracts import bus
    from iaas.hosting import services as hosting

    rng = random.Random(7)
    tag = uuid.uuid4().hex[:8]
    client = keys = None
    if args.http:
        from django.test import Client

        from iaas.api.keys import api_key_create

        client = Client(raise_request_exception=True)
        keys = {}

        # A few customers, each with a key made before the profile starts, as the HTTP
        # benchmark's clients: a new key's first use records it (a statement more).
        customers = spread[:20] if args.shape == "spread" else hot[1:2]
        keys = {owner_id: api_key_create(owner_id=owner_id, name="profile").key for owner_id, _ in customers}

    def purchase_over_http(n: int) -> None:
        owner_id, wallet_id = rng.choice(customers)
        response = client.post(
            "/api/v1/cloud/servers/",
            {"name": f"p{abs(n)}", "plan": SERVER_PLAN, "wallet": str(wallet_id)},
            content_type="application/json",
            headers={"authorization": f"Token {keys[owner_id]}", "idempotency-key": f"{tag}-{n}"},
        )
        if response.status_code != 201:
            raise SystemExit(f"purchase over HTTP: {response.status_code} {response.content[:300]!r}")

    def purchase(n: int) -> None:
        if args.http:
            purchase_over_http(n)
            return
        if args.shape == "spread":
            owner_id, wallet_id = rng.choice(spread)
            cloud.server_create(
                owner_id=owner_id, wallet_id=uuid.UUID(str(wallet_id)), name=f"p{n}", plan_id=SERVER_PLAN
            )
            return
        owner_id, wallet_id = hot[1]
        if n % 2:
            hosting.subscription_create(
                owner_id=owner_id,
                wallet_id=uuid.UUID(str(wallet_id)),
                domain=f"p{tag}-{n}.bench.example",
                plan_id=HOSTING_PLAN,
            )
        else:
            cloud.server_create(
                owner_id=owner_id, wallet_id=uuid.UUID(str(wallet_id)), name=f"p{n}", plan_id=SERVER_PLAN
            )

    for n in range(20):  # warm up
        purchase(-n)
    bus.deliver_pending()

    # Where the time goes: total wall time against time spent inside the driver's execute.
    db_time = [0.0]

    def timed_execute(execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            db_time[0] += time.perf_counter() - t0

    profiler = Profiler(interval=0.0005)
    with connection.execute_wrapper(timed_execute):
        started = time.perf_counter()
        profiler.start()
        for n in range(args.purchases):
            purchase(n)
        profiler.stop()
        purchases_s = time.perf_counter() - started
        db_purchases = db_time[0]
        db_time[0] = 0.0
        started = time.perf_counter()
        settled = bus.deliver_pending().delivered
        settle_s = time.perf_counter() - started
    name = f"{'http-' if args.http else ''}{args.shape}{'-chunk' if args.chunk else ''}"
    name += "-inline" if args.inline else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"profile-{name}.html").write_text(profiler.output_html())
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    per = purchases_s / args.purchases * 1000
    db_per = db_purchases / args.purchases * 1000
    print(
        f"{args.purchases} purchases: {per:.2f} ms each, of which {db_per:.2f} ms "
        f"waiting on PostgreSQL ({db_purchases / purchases_s:.0%}); "
        f"{settled} settlements: {settle_s / max(settled, 1) * 1000:.2f} ms each, "
        f"{db_time[0] / max(settled, 1) * 1000:.2f} ms waiting on PostgreSQL"
    )


if __name__ == "__main__":
    main()
