"""Purchases through the REST API under gunicorn, against a trivial authenticated GET
on the same server: the framework's own ceiling, measured in the same run.

    .venv/bin/python -m bench.http --quick                       # about 2 minutes
    .venv/bin/python -m bench.http --app-dir /work/wt-api        # another checkout's app

Migrates a fresh ``bench_http`` database with the app's own migrations, starts gunicorn
(production settings, sandbox payments, sync workers), registers one customer per
client through the API (a wallet and a top-up each), then for each number of clients
drives load from separate processes (standard-library HTTP, keep-alive when the server
allows it): ``GET /api/v1/wallets/{id}/`` and ``POST /api/v1/cloud/servers/`` with an
Idempotency-Key. Settlement runs as the app ships it (on commit, in the request); the
run ends with deliver-pending and reconcile. Writes bench/results/http-<time>.json and
bench/results/http.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import uuid
from pathlib import Path

from .client import Api, Gunicorn, app_env, deliver_and_reconcile, free_port, manage, open_wallet, register
from .common import RESULTS, ROOT, Point, db_url, recreate_database, run_point, write_json

DATABASE = "bench_http"


class Load:
    """One client process: its own customer, its own connection."""

    def __init__(self, index: int, params: dict) -> None:
        customer = params["customers"][index % len(params["customers"])]
        self.api = Api(params["port"], customer["token"], timeout=30)
        self.wallet = customer["wallet"]
        self.kind = params["kind"]
        self.tag = f"{params['tag']}-{index}"
        self.statuses: dict[int, int] = {}

    def __call__(self, n: int) -> None:
        if self.kind == "get":
            response = self.api.request("GET", f"/api/v1/wallets/{self.wallet}/")
            expected = 200
        else:
            response = self.api.request(
                "POST",
                "/api/v1/cloud/servers/",
                {"name": f"h{n % 1000}", "plan": "s-1vcpu-1gb", "wallet": self.wallet},
                key=f"{self.tag}-{n}-{uuid.uuid4().hex[:8]}",
            )
            expected = 201
        self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
        if response.status != expected:
            raise StatusError(f"{response.status} {response.problem_code}")

    def close(self) -> dict:
        self.api.close()
        return {"statuses": self.statuses}


class StatusError(Exception):
    pass


def load_op(index: int, params: dict) -> Load:
    return Load(index, params)


def chart(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4.5))
    for suite in dict.fromkeys(p.suite for p in points):
        series = sorted((p.clients, p.ops_per_s) for p in points if p.suite == suite)
        axis.plot([c for c, _ in series], [v for _, v in series], marker="o", label=suite)
    axis.set_xscale("log", base=2)
    axis.set_xticks(
        sorted({p.clients for p in points}), [str(c) for c in sorted({p.clients for p in points})]
    )
    axis.set_xlabel("clients (one process each)")
    axis.set_ylabel("requests per second")
    axis.set_title("HTTP under gunicorn: purchase against an authenticated GET")
    axis.grid(alpha=0.3)
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--app-dir", type=Path, default=ROOT, help="the checkout whose app to serve (read-only)"
    )
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--duration", type=float, help="seconds per point (default 5 quick, 20 full)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (default 4: 2 x cores)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    duration = args.duration or (5.0 if args.quick else 20.0)
    clients_list = [int(c) for c in args.clients.split(",")]
    app_dir = args.app_dir.resolve()
    started = time.time()

    recreate_database(DATABASE)
    env = app_env(app_dir, db_url(DATABASE))
    manage(app_dir, env, "migrate", "--no-input", "-v0")
    port = free_port()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "http-gunicorn.log", "w") as server_log:
        server = Gunicorn(app_dir, env, port=port, workers=args.workers, log=server_log)
        server.start()
        try:
            customers = []
            for i in range(max(clients_list)):
                api = register(port, f"bench-http-{i}-{uuid.uuid4().hex[:6]}")
                customers.append({"token": api.token, "wallet": open_wallet(api)})
            points = []
            for clients in clients_list:
                for kind, suite in (("get", "GET wallet"), ("post", "POST server (purchase)")):
                    latencies, errors, extras, _ = run_point(
                        "bench.http:load_op",
                        clients=clients,
                        duration=duration,
                        params={
                            "port": port,
                            "customers": customers,
                            "kind": kind,
                            "tag": f"{kind}{clients}",
                        },
                    )
                    statuses: dict[int, int] = {}
                    for extra in extras:
                        for status, count in extra["statuses"].items():
                            statuses[status] = statuses.get(status, 0) + count
                    point = Point.from_latencies(
                        suite, clients, duration, latencies, errors, statuses=statuses
                    )
                    points.append(point)
                    print(
                        f"{suite:<24} {clients:>2} clients: {point.ops_per_s:8.1f} req/s"
                        f"  p50 {point.p50_ms:7.2f} ms  p99 {point.p99_ms:7.2f} ms  statuses {statuses}",
                        flush=True,
                    )
        finally:
            server.stop()
    check = deliver_and_reconcile(app_dir, env)
    by_key = {(p.suite, p.clients): p for p in points}
    for clients in clients_list:
        post, get = by_key[("POST server (purchase)", clients)], by_key[("GET wallet", clients)]
        post.extra["baseline"] = "GET wallet"
        post.extra["ratio"] = round(post.ops_per_s / get.ops_per_s, 3) if get.ops_per_s else None
    print("\n| request | clients | req/s | p50 ms | p99 ms | ratio to GET |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for p in points:
        ratio = p.extra.get("ratio")
        print(
            f"| {p.suite} | {p.clients} | {p.ops_per_s:,.0f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | "
            f"{f'{ratio:.0%}' if ratio is not None else ''} |"
        )
    print(f"\nafter the run: {check}")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    write_json(
        RESULTS / f"http-{stamp}.json",
        {
            "app_dir": str(app_dir),
            "workers": args.workers,
            "duration_per_point_s": duration,
            "points": [p.as_dict() for p in points],
            "after": check,
            "elapsed_s": round(time.time() - started, 1),
        },
    )
    chart(points, RESULTS / "http.png")
    return 0 if check["reconcile_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
