"""What every benchmark script shares: the database server it talks to, dedicated
databases (``bench_`` prefix only), timed worker processes, percentiles, the machine.

A benchmark point runs N worker processes (one per client, each with its own database
connection, so the GIL never decides a figure). Every worker builds its operation, does
a short warm-up, reports ready, then runs the operation back to back for the same
wall-clock window as the others; the latency of each completed operation is kept.
"""

from __future__ import annotations

import importlib
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("BENCH_PG_USER", "postgres")
# The migrated database that service-layer databases are copied from (CREATE DATABASE
# ... TEMPLATE): migrating once per run instead of once per database.
TEMPLATE_DB = os.environ.get("BENCH_TEMPLATE_DB", "iaas_bench")

# Never benchmark (let alone drop) anything else: other people's data lives there.
PROTECTED = {"postgres", "template0", "template1", "iaas", "iaas_api", "iaas_admin", "iaas_ops", "iaas_dev"}

SPAWN = mp.get_context("spawn")
TERMINATE = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
)


def db_url(name: str, *, host: str = PG_HOST, port: int = PG_PORT) -> str:
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit(f"benchmarks run against this machine only, not {host}")
    return f"postgres://{PG_USER}@{host}:{port}/{name}"


def connect(name: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(db_url(name), **kwargs)


def _check_ours(name: str) -> None:
    if name in PROTECTED or not name.startswith("bench_"):
        raise SystemExit(f"refusing to touch database {name!r}: benchmarks use bench_* databases only")


def recreate_database(name: str, *, template: str | None = None) -> None:
    """Drop and create a bench_* database, optionally as a copy of ``template``."""
    _check_ours(name)
    with connect("postgres", autocommit=True) as conn:
        conn.execute(
            TERMINATE,
            [name],
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')


def ensure_database(name: str) -> bool:
    """Create database ``name`` when it does not exist (a fresh machine); True when it
    was created. Never drops or changes one that exists."""
    if name in PROTECTED:
        raise SystemExit(f"refusing to create database {name!r}: it is not a benchmark's")
    with connect("postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        try:
            conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.errors.DuplicateDatabase:  # another benchmark created it meanwhile
            return False
    return True


def migrate_template(*, app_dir: Path = ROOT) -> None:
    """Bring the template database up to date with the app's migrations (a no-op when it
    is), creating it first on a machine that has none."""
    ensure_database(TEMPLATE_DB)
    env = {**os.environ, "DATABASE_URL": db_url(TEMPLATE_DB), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=app_dir, env=env, check=True
    )
    with connect("postgres", autocommit=True) as conn:  # a template copy needs it idle
        conn.execute(
            TERMINATE,
            [TEMPLATE_DB],
        )


# --- statistics --------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Point:
    """One measured point: a suite (what was run) at a number of clients."""

    suite: str
    clients: int
    duration: float
    ops: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_latencies(
        cls, suite: str, clients: int, duration: float, latencies: list[float], errors=None, **extra
    ) -> Point:
        latencies = sorted(latencies)
        return cls(
            suite=suite,
            clients=clients,
            duration=round(duration, 3),
            ops=len(latencies),
            ops_per_s=round(len(latencies) / duration, 1) if duration else 0.0,
            p50_ms=round(percentile(latencies, 50) * 1000, 3),
            p99_ms=round(percentile(latencies, 99) * 1000, 3),
            errors=dict(errors or {}),
            extra=extra,
        )

    def as_dict(self) -> dict:
        return asdict(self)


# --- timed worker processes --------------------------------------------------------------


def _load(path: str) -> Callable:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _worker(factory: str, index: int, params: dict, ready, go, start_at, duration: float, results) -> None:
    try:
        op = _load(factory)(index, params)
        for n in range(params.get("warmup", 2)):
            op(-1 - n)
    except BaseException:
        ready.put((index, traceback.format_exc()))
        return
    ready.put((index, None))
    go.wait()
    t_start = start_at.value
    t_end = t_start + duration
    while time.time() < t_start:
        time.sleep(0.0005)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    n = 0
    while True:
        t0 = time.perf_counter()
        if time.time() >= t_end:
            break
        try:
            op(n)
        except Exception as error:
            errors[type(error).__name__] += 1
        else:
            latencies.append(time.perf_counter() - t0)
        n += 1
    extra = op.close() if hasattr(op, "close") else None
    results.put((index, latencies, dict(errors), extra or {}))


def run_point(
    factory: str,
    *,
    clients: int,
    duration: float,
    params: dict,
    helpers: list[tuple[str, dict]] = (),
    ready_timeout: float = 120,
) -> tuple[list[float], Counter, list[dict], list[dict]]:
    """Run ``clients`` timed workers built by ``factory`` (``module:function(index, params)``
    returning a callable ``op(n)``) and the ``helpers`` (e.g. a settlement worker) over
    the same window. Returns latencies, errors, the clients' and the helpers' extras."""
    ready, results = SPAWN.Queue(), SPAWN.Queue()
    go = SPAWN.Event()
    start_at = SPAWN.Value("d", 0.0)
    specs = [(factory, i, params) for i in range(clients)]
    specs += [(helper_factory, 1000 + i, hp) for i, (helper_factory, hp) in enumerate(helpers)]
    procs = [
        SPAWN.Process(target=_worker, args=(f, i, p, ready, go, start_at, duration, results), daemon=True)
        for f, i, p in specs
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            index, failure = ready.get(timeout=ready_timeout)
            if failure:
                raise RuntimeError(f"worker {index} failed to start:\n{failure}")
        start_at.value = time.time() + 0.2
        go.set()
        collected = [results.get(timeout=duration + ready_timeout) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    client_extras, helper_extras = [], []
    for index, lat, errs, extra in sorted(collected, key=lambda item: item[0]):
        if index >= 1000:
            helper_extras.append(extra)
            continue
        latencies.extend(lat)
        errors.update(errs)
        client_extras.append(extra)
    return latencies, errors, client_extras, helper_extras


# --- Django in a child process -------------------------------------------------------------


def django_setup(database: str, env: dict[str, str] | None = None) -> None:
    """Set up Django in this (worker) process against ``database``. Base settings: DEBUG
    off, so no query log grows in memory; the environment picks the knobs."""
    os.environ["DATABASE_URL"] = db_url(database)
    os.environ["DJANGO_SETTINGS_MODULE"] = "iaas.settings.base"
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    for key, value in (env or {}).items():
        os.environ[key] = str(value)
    import django

    django.setup()
    if os.environ.get("BENCH_SERVER_SIDE_BINDING") == "1":
        # EXPERIMENT, not the core's configuration: psycopg's server-side binding, with
        # which psycopg prepares a statement after its fifth execution. Set before the
        # first connection is made, so the connection picks it up.
        from django.conf import settings

        settings.DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True


def _django_call(database: str, env: dict, func: str, kwargs: dict, results) -> None:
    try:
        django_setup(database, env)
        results.put((True, _load(func)(**kwargs)))
    except BaseException:
        results.put((False, traceback.format_exc()))


def in_django(database: str, func: str, *, env: dict | None = None, timeout: float = 600, **kwargs):
    """Call ``module:function(**kwargs)`` in a fresh process with Django set up against
    ``database``; return its (picklable) result."""
    results = SPAWN.Queue()
    proc = SPAWN.Process(target=_django_call, args=(database, env or {}, func, kwargs, results))
    proc.start()
    try:
        ok, value = results.get(timeout=timeout)
    finally:
        proc.join(timeout=30)
    if not ok:
        raise RuntimeError(f"{func} failed:\n{value}")
    return value


# --- the machine ---------------------------------------------------------------------------


def machine() -> dict:
    info = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    with connect("postgres") as conn:
        info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
        info["pg_settings"] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('shared_buffers', 'synchronous_commit', 'fsync', 'max_connections', 'wal_level')"
            ).fetchall()
        )
        info["other_backends_at_start"] = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND datname NOT LIKE 'bench%%'"
        ).fetchone()[0]
    try:
        import django

        info["django"] = django.get_version()
    except ImportError:
        pass
    info["psycopg"] = psycopg.__version__
    info["pgbench"] = shutil.which("pgbench") or ""
    return info


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
