"""pgbench's built-in tpcb-like script against its own database: the server's own
figure for a small read-write transaction on this machine, in the same run."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from .common import PG_HOST, PG_PORT, PG_USER, Point, connect, recreate_database

DATABASE = "bench_pgbench"


def _base() -> list[str]:
    return ["pgbench", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER]


def prepare(*, scale: int) -> None:
    """``pgbench -i`` at ``scale`` (one branch row per unit: a scale at least the number
    of clients keeps tpcb-like from queueing on one branch row)."""
    recreate_database(DATABASE)
    subprocess.run([*_base(), "-i", "-q", "-s", str(scale), DATABASE], check=True, capture_output=True)


def run(*, clients: int, duration: float) -> Point:
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as tmp:
        prefix = Path(tmp) / "txn"
        result = subprocess.run(
            [
                *_base(),
                "-c",
                str(clients),
                "-j",
                str(clients),
                "-T",
                str(max(1, round(duration))),
                "-b",
                "tpcb-like",
                "-n",  # no vacuum: it would truncate pgbench_history, which check() sums
                "-l",
                f"--log-prefix={prefix}",
                DATABASE,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        latencies = []
        for log in Path(tmp).glob("txn*"):
            for line in log.read_text().splitlines():
                fields = line.split()
                if len(fields) >= 3:
                    latencies.append(int(fields[2]) / 1_000_000)  # microseconds
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    point = Point.from_latencies("pgbench tpcb-like", clients, max(1, round(duration)), latencies)
    point.extra["tps_reported"] = float(tps.group(1)) if tps else None
    point.errors = {"failed": int(failed.group(1))} if failed and int(failed.group(1)) else {}
    return point


def check() -> list[str]:
    """tpcb-like's own invariant: branches, tellers, accounts and history agree."""
    with connect(DATABASE) as conn:
        sums = conn.execute(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts),"
            " (SELECT sum(bbalance) FROM pgbench_branches),"
            " (SELECT sum(tbalance) FROM pgbench_tellers),"
            " (SELECT COALESCE(sum(delta), 0) FROM pgbench_history)"
        ).fetchone()
    return [] if len(set(sums)) == 1 else [f"pgbench balances disagree: {sums}"]
