"""Purchases per second against the database's own limit, measured in one run.

    .venv/bin/python -m bench.throughput --quick     # smoke run, about 4 minutes
    .venv/bin/python -m bench.throughput             # the full run, about 20 minutes

For each number of clients (1, 4, 16), one after the other so that a baseline and the
figures compared with it are measured minutes apart at most:
  raw spread / raw one-row   the least a purchase is, in SQL through psycopg (bench.raw)
  raw protocol spread        the service's purchase, the same six statements by hand
                             (bench.raw.ProtocolPurchase), on a seeded copy of the schema
  pgbench tpcb-like          pgbench's built-in script (bench.pgbench)
  service spread             server purchases through Cloud's service, 10,000 wallets
  service hot                one wallet, Cloud and Hosting alternating, no chunk
  service hot+chunk          the same with a reserve-ahead chunk per context
  service hot+chunk inline   the same, but settling each charge in the request
                             (delivery on commit) instead of after the point

Like with like: the raw baselines do not settle, so by default neither do the service
points during their window (--settler none); after each point its backlog is settled
as deliver_events --loop settles it (a wallet's pending charges per transaction),
timed and reported (settled/s), and every invariant is checked (reconcile). A point
whose reconciliation fails makes the run fail. --settler batched|per-row runs a
settlement worker beside the clients instead (then the service figure carries work the
raw baseline does not). The inline point settles in the request, as development does.
Then the history check: purchase p50 with a long ledger (1,000,000 entries; --quick:
100,000) against the same wallets without it.

Writes bench/results/throughput-<time>.json, bench/results/throughput.png and prints a
table; --markdown also prints the tables BENCHMARKS.md carries.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from . import history, pgbench, raw, service
from .common import RESULTS, TEMPLATE_DB, Point, in_django, machine, migrate_template, recreate_database
from .common import run_point as run_workers

SERVICE_DB = "bench_svc"
HISTORY_EMPTY_DB = "bench_hist_empty"
HISTORY_FULL_DB = "bench_hist_full"
WALLETS = 10_000
CHUNK = {"IAAS_RESERVE_AHEAD_CLOUD": 1_000, "IAAS_RESERVE_AHEAD_HOSTING": 399_000}  # ~1000 purchases each

# suite -> the baseline suite its ratio is taken against
BASELINE = {
    "service spread": "raw protocol spread",
    "raw protocol spread": "raw spread",
    "service hot": "raw one-row",
    "service hot+chunk": "raw one-row",
    "service hot+chunk inline": "raw one-row",
    "raw spread": "pgbench tpcb-like",
    "raw one-row": "pgbench tpcb-like",
}


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


def raw_point(shape: str, clients: int, duration: float) -> Point:
    latencies, errors, _, _ = run_workers(
        "bench.raw:purchase_op",
        clients=clients,
        duration=duration,
        params={"wallets": WALLETS, "shape": shape},
    )
    point = Point.from_latencies(f"raw {shape}", clients, duration, latencies, errors)
    point.extra["check"] = raw.check() or "ok"
    return point


def raw_protocol_point(clients: int, duration: float, wallets) -> Point:
    latencies, errors, _, _ = run_workers(
        "bench.raw:protocol_op", clients=clients, duration=duration, params={"wallets": wallets}
    )
    point = Point.from_latencies("raw protocol spread", clients, duration, latencies, errors)
    point.extra.update(in_django(raw.PROTOCOL_DATABASE, "bench.service:drain_and_reconcile"))
    return point


def service_point(
    suite: str, clients: int, duration: float, *, wallets, shape: str, env: dict, settler: str | None
) -> Point:
    params = {
        "database": SERVICE_DB,
        "wallets": wallets,
        "shape": shape,
        "env": env,
        "tag": f"{suite[8:]}{clients}",
    }
    params["tag"] = params["tag"].replace(" ", "").replace("+", "")
    helpers = []
    if settler:
        helpers = [("bench.service:settler_op", {"database": SERVICE_DB, "env": env, "settler": settler})]
    latencies, errors, clients_extra, helpers_extra = run_workers(
        "bench.service:purchase_op", clients=clients, duration=duration, params=params, helpers=helpers
    )
    point = Point.from_latencies(suite, clients, duration, latencies, errors)
    point.extra["settled_during_run"] = sum(h.get("delivered", 0) for h in helpers_extra)
    point.extra["settler"] = settler or (
        "inline (on commit)" if env.get("IAAS_DELIVER_ON_COMMIT") == "1" else "after"
    )
    point.extra["kinds"] = {
        kind: sum(extra.get("kinds", {}).get(kind, 0) for extra in clients_extra)
        for kind in ("cloud", "hosting")
    }
    point.extra.update(in_django(SERVICE_DB, "bench.service:drain_and_reconcile"))
    return point


def history_check(*, per_wallet: int, duration: float, rounds: int) -> dict:
    """Purchase p50 (1 client, settled in the request) on two copies of the same seeded
    database, one with ``per_wallet`` x 10,000 ledger entries loaded: alternated
    ``rounds`` times so both see the same machine."""
    wallets = {}
    for name in (HISTORY_EMPTY_DB, HISTORY_FULL_DB):
        recreate_database(name, template=TEMPLATE_DB)
        wallets[name] = service.seed(name, tag="hist", wallets=WALLETS, amount=100_000)
    log(f"loading {per_wallet * WALLETS:,} ledger entries into {HISTORY_FULL_DB}")
    loaded = history.load(
        HISTORY_FULL_DB, wallet_ids=[w for _, w in wallets[HISTORY_FULL_DB]], per_wallet=per_wallet
    )
    log(f"loaded: {loaded}")
    latencies = {HISTORY_EMPTY_DB: [], HISTORY_FULL_DB: []}
    for round_ in range(rounds):
        for name in (HISTORY_EMPTY_DB, HISTORY_FULL_DB):
            lat, errors, _, _ = run_workers(
                "bench.service:purchase_op",
                clients=1,
                duration=duration,
                params={
                    "database": name,
                    "wallets": wallets[name],
                    "shape": "spread",
                    "env": {"IAAS_DELIVER_ON_COMMIT": "1"},
                    "tag": f"h{round_}",
                },
            )
            if errors:
                raise SystemExit(f"history check: errors {dict(errors)} on {name}")
            latencies[name] += lat
    empty = Point.from_latencies("purchase, empty history", 1, duration * rounds, latencies[HISTORY_EMPTY_DB])
    full = Point.from_latencies("purchase, long history", 1, duration * rounds, latencies[HISTORY_FULL_DB])
    checks = {name: in_django(name, "bench.service:drain_and_reconcile") for name in latencies}
    return {
        "ledger_entries": loaded["ledger_entries"],
        "load": loaded,
        "empty": empty.as_dict(),
        "full": full.as_dict(),
        "p50_ratio": round(full.p50_ms / empty.p50_ms, 3),
        "p99_ratio": round(full.p99_ms / empty.p99_ms, 3),
        "reconcile": checks,
    }


def add_ratios(points: list[Point]) -> None:
    by_key = {(p.suite, p.clients): p for p in points}
    for point in points:
        base = by_key.get((BASELINE.get(point.suite), point.clients))
        if base and base.ops_per_s:
            point.extra["baseline"] = base.suite
            point.extra["ratio"] = round(point.ops_per_s / base.ops_per_s, 3)
        least = by_key.get(("raw spread", point.clients))
        if point.suite == "service spread" and least and least.ops_per_s:
            # Against the least a purchase is as well (the baseline before issue 14).
            point.extra["ratio_to_raw_spread"] = round(point.ops_per_s / least.ops_per_s, 3)


def table(points: list[Point]) -> str:
    lines = [
        "| suite | clients | ops/s | p50 ms | p99 ms | ratio | baseline | errors | backlog | settled/s after "
        "| reconcile |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | --- |",
    ]
    for p in points:
        ratio = p.extra.get("ratio")
        lines.append(
            f"| {p.suite} | {p.clients} | {p.ops_per_s:,.0f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | "
            f"{f'{ratio:.0%}' if ratio is not None else ''} | {p.extra.get('baseline', '')} | "
            f"{', '.join(f'{k} {v}' for k, v in p.errors.items()) or '0'} | {p.extra.get('backlog', '')} | "
            f"{p.extra.get('settled_per_s') or ''} | "
            f"{'ok' if p.extra.get('reconcile_ok', p.extra.get('check') == 'ok') else 'FAILED'} |"
        )
    return "\n".join(lines)


def chart(points: list[Point], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = list(dict.fromkeys(p.suite for p in points))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for suite in suites:
        series = sorted((p.clients, p) for p in points if p.suite == suite)
        xs = [c for c, _ in series]
        style = "--" if suite.startswith(("raw", "pgbench")) else "-"
        left.plot(xs, [p.ops_per_s for _, p in series], style, marker="o", label=suite)
        ratios = [(c, p.extra["ratio"]) for c, p in series if "ratio" in p.extra]
        if suite.startswith("service") and ratios:
            right.plot([c for c, _ in ratios], [r for _, r in ratios], marker="o", label=suite)
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks([1, 4, 16], ["1", "4", "16"])
        axis.set_xlabel("clients (one process each)")
        axis.grid(alpha=0.3)
    left.set_yscale("log")
    left.set_ylabel("operations per second")
    left.set_title("Throughput against concurrency")
    left.legend(fontsize=8)
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    right.set_ylabel("ratio to its raw SQL baseline")
    right.set_title("Service layer / raw SQL (spread: raw protocol spread; hot: raw one-row)")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short points, a 100,000-entry history")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--duration", type=float, help="seconds per point (default 4 quick, 20 full)")
    parser.add_argument(
        "--settler",
        choices=["none", "per-row", "batched"],
        default="none",
        help="a settlement worker beside the clients (default none: like the raw baselines, "
        "the window leaves settlement out; the backlog is settled and timed after each point)",
    )
    parser.add_argument(
        "--only",
        default="raw,pgbench,service,history",
        help="comma-separated parts to run: raw, pgbench, service, history",
    )
    parser.add_argument(
        "--history-per-wallet", type=int, help="ledger entries per wallet (default 100, quick 10)"
    )
    parser.add_argument("--markdown", action="store_true", help="also print the tables for BENCHMARKS.md")
    args = parser.parse_args(argv)
    duration = args.duration or (4.0 if args.quick else 20.0)
    clients_list = [int(c) for c in args.clients.split(",")]
    parts = set(args.only.split(","))
    started = time.time()
    info = machine()
    log(f"machine: {info}")

    migrate_template()
    protocol_wallets = None
    if "raw" in parts:
        recreate_database(raw.DATABASE)
        raw.prepare(wallets=WALLETS)
        recreate_database(raw.PROTOCOL_DATABASE, template=TEMPLATE_DB)
        protocol_wallets = service.seed(raw.PROTOCOL_DATABASE, tag="proto", wallets=WALLETS, amount=100_000)
    if "pgbench" in parts:
        pgbench.prepare(scale=max(clients_list))
    statements = None
    if "service" in parts:
        recreate_database(SERVICE_DB, template=TEMPLATE_DB)
        spread = service.seed(SERVICE_DB, tag="spread", wallets=WALLETS, amount=100_000)
        hot = service.seed(SERVICE_DB, tag="hot", wallets=3, amount=service.TOP_UP, top_ups=10)
        statements = in_django(
            SERVICE_DB,
            "bench.service:statements_per_purchase",
            env={"IAAS_DELIVER_ON_COMMIT": "0"},
            owner_id=hot[2][0],
            wallet_id=hot[2][1],
        )
        log(f"statements: {statements}")
    settler = None if args.settler == "none" else args.settler
    points: list[Point] = []
    failures: list[str] = []

    def record(point: Point) -> None:
        points.append(point)
        ok = point.extra.get("reconcile_ok", point.extra.get("check") == "ok")
        log(
            f"{point.suite:<26} {point.clients:>2} clients: {point.ops_per_s:>8,.1f} ops/s  "
            f"p50 {point.p50_ms:7.2f} ms  p99 {point.p99_ms:7.2f} ms  errors {point.errors or 0}  "
            f"backlog {point.extra.get('backlog', '-')}  {'ok' if ok else 'INVARIANTS FAILED'}"
        )
        if not ok:
            failures.append(f"{point.suite} at {point.clients}: {point.extra}")

    for clients in clients_list:
        if "raw" in parts:
            record(raw_point("spread", clients, duration))
            record(raw_point("one-row", clients, duration))
            record(raw_protocol_point(clients, duration, protocol_wallets))
        if "pgbench" in parts:
            point = pgbench.run(clients=clients, duration=duration)
            point.extra["check"] = pgbench.check() or "ok"
            record(point)
        if "service" in parts:
            no_chunk = {"IAAS_DELIVER_ON_COMMIT": "0"}
            chunk = {**CHUNK, "IAAS_DELIVER_ON_COMMIT": "0"}
            inline = {**CHUNK, "IAAS_DELIVER_ON_COMMIT": "1"}
            for suite, wallets, shape, env, settles in [
                ("service spread", spread, "spread", no_chunk, settler),
                ("service hot", hot[:1], "hot", no_chunk, settler),
                ("service hot+chunk", hot[1:2], "hot", chunk, settler),
                ("service hot+chunk inline", hot[2:3], "hot", inline, None),
            ]:
                record(
                    service_point(
                        suite, clients, duration, wallets=wallets, shape=shape, env=env, settler=settles
                    )
                )
    add_ratios(points)

    history_result = None
    if "history" in parts:
        per_wallet = args.history_per_wallet or (10 if args.quick else 100)
        history_result = history_check(per_wallet=per_wallet, duration=duration, rounds=2)
        h = history_result
        log(
            f"history: {h['ledger_entries']:,} entries, p50 {h['full']['p50_ms']} ms "
            f"vs {h['empty']['p50_ms']} ms empty: {h['p50_ratio']}x"
        )
        for name, check in history_result["reconcile"].items():
            if not check["reconcile_ok"]:
                failures.append(f"history {name}: {check}")

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    payload = {
        "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "elapsed_s": round(time.time() - started, 1),
        "mode": "quick" if args.quick else "full",
        "duration_per_point_s": duration,
        "settler": settler,
        "machine": info,
        "load_average_at_end": list(__import__("os").getloadavg()),
        "statements": statements,
        "points": [p.as_dict() for p in points],
        "history": history_result,
        "failures": failures,
    }
    out = RESULTS / f"throughput-{stamp}.json"
    from .common import write_json

    write_json(out, payload)
    if points:
        chart(points, RESULTS / "throughput.png")
    print()
    print(table(points))
    if args.markdown and history_result:
        print()
        print("| history | ledger entries | p50 ms | p99 ms | ratio p50 |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for key in ("empty", "full"):
            h = history_result[key]
            ratio = history_result["p50_ratio"] if key == "full" else 1
            entries = history_result["ledger_entries"] if key == "full" else "seed only"
            print(f"| {h['suite']} | {entries} | {h['p50_ms']} | {h['p99_ms']} | {ratio} |")
    log(f"results: {out}  chart: {RESULTS / 'throughput.png'}  ({time.time() - started:.0f} s)")
    if failures:
        log("FAILED: invariants broken:\n" + "\n".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
