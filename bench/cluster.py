"""The billing core on several hosts: network namespaces on one bridge, built by
bench/cluster_hosts.py (see its docstring for the layout and what keeps it apart from
this machine's own services), and what its task engine does when hosts fail. Needs root.

    .venv/bin/python -m bench.cluster                        # every scenario (about 7 minutes)
    .venv/bin/python -m bench.cluster --quick                # smaller loads (about 5 minutes)
    .venv/bin/python -m bench.cluster --only worker-kill,poison
    .venv/bin/python -m bench.cluster --smoke                # each piece once (about 50 s)

The cluster: ``data`` (its own PostgreSQL, RabbitMQ and Redis), ``app1`` and ``app2``
(gunicorn), ``worker1`` and ``worker2`` (``celery -A iaas worker -n worker@workerN``,
concurrency 2), ``beat`` (where ``manage.py`` runs: ``run_job`` publishes from there),
``client``. Every process runs under ``ip netns exec``; every address is checked to be in
the cluster's subnet. Every Django process gets production settings and
IAAS_TASK_DELIVERY_LIMIT=3, IAAS_TASK_MAX_RETRIES=2, IAAS_TASK_RETRY_DELAY_SECONDS=1.

Each scenario starts from a database copied from a migrated template (CREATE DATABASE
... TEMPLATE) and its own queues (``IAAS_TASK_QUEUE_PREFIX=iaas.<scenario>``: nothing left
from one scenario reaches the next, and the quorum queues' delivery limit is fixed when
they are first declared), seeded in SQL by bench.metering's SEED through a connection
made from the beat host: 2,000 servers on 400 wallets (--quick 500 on 100), ``paid_until``
30 minutes ago, so exactly one started hour is due; every 20th wallet cannot pay. Its
load is bounded (a number of operations, or a duration) and stops by itself; every wait
has a timeout; the cluster is torn down on exit, failure, Ctrl-C or SIGTERM.

Every scenario ends by working off the backlog as an operator would: until no job part
is queued, running, waiting for its retry or failed, dead letters drained (``drain_dead_letters``) and, when
some are dead, retried (``dead_letters --retry all``), then ``deliver_events`` until no
outbox row is pending. Then the checks:

- ``reconcile --json`` from the beat host: every invariant holds (exit 0);
- nothing lost: the work the scenario started was all done (every paying seeded server's
  ``paid_until`` moved on exactly one hour, every server of a wallet that cannot pay
  suspended; every usage record closed and its charge booked; every acknowledged purchase
  in the database);
- nothing applied twice: no server paid past that hour, bench.metering's I11 and books
  queries clean (each hour accrued once, the money agrees), at most one charge per usage
  record and one ledger entry per charge, each Idempotency-Key one server at most;
- the backlog is empty: no pending outbox row, no open job part, no dead letter left.

Each reports its operations, its redeliveries (the sum over job parts of attempts - 1:
deliveries that started a part again; and the deliveries the workers' logs show beyond
one per part), its time to recover (from the last fault to the run's end and to the
backlog drained) and the checks' verdicts.

Scenarios:

1. ``worker-kill``: a metering run on both workers with IAAS_BATCH_SIZE=50 and
   IAAS_PAUSE_IN_METERING_BATCH=0.6 (each batch waits inside its open transaction, after
   its writes: a run of about a minute, long enough for five kills and restarts); worker1
   is SIGKILLed (its whole process group) while it runs a part and holds a batch
   transaction open (seen in pg_stat_activity: ``idle in transaction`` from its address),
   then started again after 1 s, as systemd would; five times (--quick: two). A kill
   landed mid-batch when a part was RUNNING on worker1 with its transaction open at the
   kill and that part's attempts went up afterwards. Runs with IAAS_TASK_PARTITIONS=32
   (see "Prefetch" below).
2. ``broker-restart``: a metering run of the same shape in flight (0.3 s pauses, --quick
   0.6: a run of 20 to 30 s); the RabbitMQ node is
   SIGKILLed mid-run (the workers declared their queues seconds before: see
   DECLARE_SETTLE_SECONDS), started again 3 s later; the workers reconnect (a running
   task is cancelled and redelivered: ``worker_cancel_long_running_tasks_on_connection_loss``);
   the run must finish.
3. ``app-cut``: customers on the client host buy servers over HTTP (registered through the
   API, a wallet and a top-up each), every POST with an Idempotency-Key, spread over app1
   and app2, while beat and the workers deliver events as in production; mid-load app1's
   cable is pulled (when PostgreSQL shows one of app1's sessions inside a transaction, if
   that happens within 3 s) and plugged back seconds later. A client that gets no answer
   in 2 s retries the same key on the other host until a definitive answer (201, 402); a
   409 "in progress" or a 503 is retried after a short sleep. Audit: every 201 exists, each
   key made one server at most (exactly one for a 201), each wallet's balance is its top-up
   minus its acknowledged purchases after settlement; app1's sessions during the cut
   (IAAS_IDLE_IN_TRANSACTION_TIMEOUT_MS=5000 on the app hosts) and PostgreSQL's log of the
   sessions it ended are reported.
4. ``double-publish``: IAAS_REPEAT_PUBLISH=2 on the beat host (``run_job``) and the
   workers: a metering run, then a settlement run, then a delivery run; every part is
   published twice (the workers' logs show each part received twice); each hour accrued
   once, each usage record closed once, each charge booked once.
5. ``poison``: (a) workers with IAAS_FAIL_IN_JOB_PART=1 (a bug deployed) take a
   settlement run (after a metering run on healthy workers): each part fails, is retried
   twice, then dead-lettered (reason ``rejected``); ``drain_dead_letters`` copies them and
   ``dead_letters --json`` lists them (the admin's "Dead letters"); the fix is deployed
   (workers restarted without the variable), ``dead_letters --retry all``, the run
   succeeds. (b) a message that kills its worker every time: workers with
   IAAS_PAUSE_IN_JOB_PART=30 take a one-part job (``release_idle``); each time the part
   is RUNNING with a new attempt, the pool process named in JobPart.worker is SIGKILLed
   (checked to be in that worker's process group first); RabbitMQ dead-letters the message
   past the delivery limit (reason ``delivery_limit``); drained; workers restarted
   normally; retried; the run succeeds.
6. ``scale`` (no fault): a metering run over 60,000 servers on 12,000 wallets (--quick
   5,000 on 1,000), a fresh seed each time, on one worker host (concurrency 2), on two,
   and on two with IAAS_TASK_PARTITIONS=32; timed from ``run_job`` to the run's
   ``finished_at`` (JobRun.duration); services per second and the ratio. The hosts share
   this machine's two cores and one PostgreSQL, so a second host cannot add throughput
   here; the note says so.

Prefetch (README, "Two things about quorum queues"): RabbitMQ gives quorum queues no
global prefetch, so a worker reserves up to its concurrency in messages per queue it
consumes. With the default 8 partitions on 8 queues (one part a queue) the worker whose
consumers registered first reserves every part of a run and the other host idles: the
scale scenario shows it (parts per host). The fault scenarios that need both hosts busy
run 32 partitions (4 parts a queue). And a worker killed holding reserved messages
returns them, each counted as a delivery on RabbitMQ 3.10: with IAAS_TASK_DELIVERY_LIMIT=3,
worker-kill's kills dead-letter parts that never ran on worker1; the scenario drains and
retries them as an operator would, and reports which.

Prints a markdown table (scenario | operations | redeliveries | time to recover |
checks) and the scale rows; writes bench/results/cluster-<UTC time>.json with everything
measured and the machine (bench.common.machine(), asked of the cluster's PostgreSQL).
Logs of every process stay under var/cluster/logs until the next run.

``--smoke`` builds the cluster and shows that each piece works, then tears it all down:
hosts and isolation (from a host, not the machine's PostgreSQL, RabbitMQ or Redis; from
the root namespace, not a host); migrations and ``seed_demo``; from the client, on each
app host, a purchase with an Idempotency-Key replayed on the other host; app1 cut off and
partitioned from the client; a confirmed message surviving a broker SIGKILL; a worker
and beat starting; ``reconcile --fix``; no namespace or link left.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any
from unittest import mock

from . import common, metering
from .cluster_hosts import (
    CLUSTER_DIR,
    DATABASE,
    DECLARE_SETTLE_SECONDS,
    AppServer,
    Cluster,
    Host,
    Process,
    RabbitNode,
    declare_quorum_queue,
    enter_netns,
    heal,
    http_request,
    log_size,
    our_links,
    our_namespaces,
    partition,
    publish_persistent,
    queue_depth,
    read_log,
    take_message,
    wait_for_log,
    wait_until,
)
from .common import RESULTS, ROOT, write_json

SMOKE_QUEUE = "iaas-c-smoke"


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


@dataclass
class Report:
    """What was checked, in order; a check that is not ``required`` never fails the run."""

    checks: list[tuple[str, bool, str, bool]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def check(self, what: str, ok: bool, detail: str = "", *, required: bool = True) -> bool:
        self.checks.append((what, ok, detail, required))
        log(f"  {'ok  ' if ok else 'FAIL' if required else 'warn'} {what}{': ' + detail if detail else ''}")
        return ok

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _, required in self.checks if required)

    def print(self) -> None:
        print("\nsmoke report")
        for what, ok, detail, required in self.checks:
            mark = "ok  " if ok else "FAIL" if required else "warn"
            print(f"  {mark} {what}{': ' + detail if detail else ''}")
        print("  timings: " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in self.timings.items()))
        print(f"  logs: {CLUSTER_DIR / 'logs'}")
        print(f"  result: {'passed' if self.passed else 'FAILED'}")


class timed:
    """``with timed(report, "step"):`` records how long the step took."""

    def __init__(self, report: Report, step: str) -> None:
        self.report, self.step = report, step

    def __enter__(self) -> None:
        log(self.step)
        self.started = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        self.report.timings[self.step] = time.monotonic() - self.started


# --- the steps -----------------------------------------------------------------------------------


def connects(address: str, port: int) -> bool:
    """A raw TCP connect, on purpose without ``in_subnet``: the isolation check below
    aims outside the subnet to see that nothing answers."""
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def machine_addresses() -> list[str]:
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True
    )
    return [line.split()[3].split("/")[0] for line in out.stdout.splitlines()]


def isolation(report: Report, cluster: Cluster) -> None:
    """From a host, the machine's own PostgreSQL, RabbitMQ and Redis cannot be reached
    (127.0.0.1 there is the host's loopback, and no route leads out of the subnet); from
    the root namespace, the subnet cannot be reached."""
    client = cluster["client"]
    targets = [("127.0.0.1", port) for port in (5432, 5672, 6379)]
    targets += [(address, 5432) for address in machine_addresses()]
    reached = [f"{a}:{p}" for a, p in targets if client.call(connects, a, p)]
    report.check(
        "client host reaches none of the machine's services",
        not reached,
        ", ".join(reached) or "tried " + ", ".join(f"{a}:{p}" for a, p in targets),
    )
    report.check(
        "the root namespace cannot reach a host (unreachable route)",
        not connects(cluster["data"].address, 5432),
    )


def seed_demo(cluster: Cluster, report: Report) -> tuple[str, str]:
    """The demo customer's API key and wallet, as .ci/run reads them from seed_demo."""
    printed = cluster.manage("beat", "seed_demo", settings="iaas.settings.development", DEBUG="0").stdout
    api_key = wallet = ""
    for line in printed.splitlines():
        if line.strip().startswith("API key:"):
            api_key = line.split("API key:")[1].split()[0]
        if line.strip().startswith("the customer's EUR wallet:"):
            wallet = line.split(":")[1].split()[0]
    report.check("seed_demo printed an API key and a wallet", bool(api_key and wallet), f"wallet {wallet}")
    if not (api_key and wallet):
        raise RuntimeError(f"seed_demo said:\n{printed}")
    return api_key, wallet


def buy_server(client: Host, app: AppServer, api_key: str, wallet: str, key: str, name: str):
    return client.http(
        "POST",
        app.url("/api/v1/cloud/servers/"),
        body={"name": name, "plan": "s-1vcpu-1gb", "wallet": wallet},
        headers={"Authorization": f"Token {api_key}", "Idempotency-Key": key},
        timeout=15,
    )


def api_from_the_client(
    report: Report, client: Host, apps: list[AppServer], api_key: str, wallet: str
) -> None:
    """Each app host answers the client; a purchase's key is honoured across hosts."""
    keys = {}
    for app in apps:
        name = app.host.name
        health = client.http("GET", app.url("/healthz"))
        report.check(f"client -> {name} GET /healthz", health.status == 200, str(health))
        plans = client.http("GET", app.url("/api/v1/cloud/plans/"))
        listed = plans.body.get("results", plans.body) if isinstance(plans.body, dict) else plans.body
        report.check(
            f"client -> {name} GET /api/v1/cloud/plans/",
            plans.status == 200 and bool(listed),
            f"{plans}, {len(listed or [])} plans",
        )
        keys[name] = f"smoke-{name}-{uuid.uuid4().hex[:8]}"
        bought = buy_server(client, app, api_key, wallet, keys[name], f"smoke-{name}")
        report.check(
            f"client -> {name} POST /api/v1/cloud/servers/ (Idempotency-Key)",
            bought.status == 201,
            f"{bought}, {bought.body if bought.status != 201 else 'server ' + bought.body['id']}",
        )
    first, second = apps[0], apps[1]
    again = buy_server(client, second, api_key, wallet, keys[first.host.name], f"smoke-{first.host.name}")
    report.check(
        f"{first.host.name}'s key sent again to {second.host.name}: replayed, not bought twice",
        again.status == 201 and again.replayed,
        str(again),
    )


def cut_app_host(report: Report, client: Host, cut: AppServer, other: AppServer) -> None:
    """Pull one app host's cable: it stops answering, the other does not; plug it back."""
    cut.host.cut()
    try:
        silent = client.http("GET", cut.url("/healthz"), timeout=2)
        report.check(
            f"{cut.host.name} cut off: client gets no answer from it", silent.status is None, str(silent)
        )
        still = client.http("GET", other.url("/healthz"))
        report.check(
            f"{cut.host.name} cut off: {other.host.name} still answers", still.status == 200, str(still)
        )
    finally:
        cut.host.restore()
    started = time.monotonic()
    back = wait_until(
        lambda: (answer := client.http("GET", cut.url("/healthz"), timeout=2)).status == 200 and answer,
        timeout=20,
        what=f"{cut.host.name} answering again",
    )
    report.check(
        f"{cut.host.name} restored: answers again",
        back.status == 200,
        f"after {time.monotonic() - started:.1f} s",
    )


def partition_client_from_app(report: Report, cluster: Cluster, apps: list[AppServer]) -> None:
    """Only the client and app1 lose each other: app2 still answers the client, app1
    still reaches the data host."""
    client, app1, app2 = cluster["client"], apps[0], apps[1]
    partition(client, app1.host)
    try:
        silent = client.http("GET", app1.url("/healthz"), timeout=2)
        report.check("client and app1 partitioned: no answer from app1", silent.status is None, str(silent))
        report.check(
            "... while app2 answers the client and app1 still reaches the database",
            client.http("GET", app2.url("/healthz")).status == 200
            and app1.host.can_connect(cluster.postgres.host.address, cluster.postgres.server.port),
        )
    finally:
        heal(client, app1.host)
    back = client.http("GET", app1.url("/healthz"), timeout=5)
    report.check("partition healed: app1 answers the client again", back.status == 200, str(back))


def broker_kill_and_restart(report: Report, client: Host, rabbit: RabbitNode) -> None:
    """A quorum queue and a confirmed persistent message survive a SIGKILL of the broker."""
    url = rabbit.url()
    client.call(declare_quorum_queue, url, SMOKE_QUEUE)
    time.sleep(DECLARE_SETTLE_SECONDS)  # a queue declared just before a kill can come back broken
    payload = {"smoke": uuid.uuid4().hex}
    client.call(publish_persistent, url, SMOKE_QUEUE, payload)
    declared = {q["name"]: q for q in rabbit.queues()}.get(SMOKE_QUEUE, {})
    report.check(
        "quorum queue declared, a persistent message published (confirmed)",
        declared.get("type") == "quorum",
        f"{SMOKE_QUEUE}, {rabbit.raft_states(SMOKE_QUEUE)}",
    )
    rabbit.kill()
    report.check(
        "broker SIGKILLed: its AMQP port refuses the client",
        not client.can_connect(rabbit.host.address, rabbit.port),
    )
    started = time.monotonic()
    rabbit.start()
    rabbit.wait_quorum_leaders()
    report.check(
        "broker started again, answers, its quorum queues have a Raft leader",
        rabbit.is_up(),
        f"in {time.monotonic() - started:.1f} s",
    )
    after = {q["name"]: q for q in rabbit.queues()}.get(SMOKE_QUEUE, {})
    report.check(
        "after the restart the quorum queue is still there",
        after.get("type") == "quorum" and after.get("durable") is True,
        f"{SMOKE_QUEUE}, {rabbit.raft_states(SMOKE_QUEUE)}",
    )
    taken = client.call(take_message, url, SMOKE_QUEUE)
    report.check(
        "and the message published before the kill is delivered", taken == payload, json.dumps(taken)
    )


def celery_if_present(report: Report, cluster: Cluster) -> None:
    """Worker and beat start, when the Celery app exists (never fails the smoke)."""
    if not (ROOT / "iaas" / "celery.py").exists():
        report.check("celery: iaas/celery.py not there yet, worker and beat not tried", True, required=False)
        return
    try:
        worker = cluster.start_worker("worker1", concurrency=1)
        beat = cluster.start_beat("beat")
        wait_for_log(worker, " ready.", timeout=60)
        report.check("celery worker on worker1 ready", True, str(worker.log), required=False)
        wait_for_log(beat, "beat: Starting", timeout=30)
        report.check("celery beat on beat started", True, str(beat.log), required=False)
    except Exception as error:
        report.check("celery worker and beat", False, f"{error}".splitlines()[0], required=False)


def reconcile(report: Report, cluster: Cluster) -> None:
    result = cluster.manage("beat", "reconcile", "--fix", "--json", check=False, timeout=120)
    try:
        verdict = json.loads(result.stdout)
    except ValueError:
        verdict = {"ok": False, "said": (result.stdout + result.stderr)[-500:]}
    report.check(
        "reconcile --fix from the beat host: invariants hold",
        result.returncode == 0 and verdict.get("ok") is True,
        f"pending events {verdict.get('pending_events')}" if "said" not in verdict else verdict["said"],
    )


def nothing_left(report: Report) -> None:
    namespaces, links = our_namespaces(), our_links()
    report.check(
        "teardown: no namespace or link of ours left",
        not namespaces and not links,
        ", ".join(namespaces + links),
    )


# --- the scenarios: what they share ------------------------------------------------------------

# Every Django process of a scenario (workers, beat's commands, app hosts).
TASK_SETTINGS = {
    "IAAS_TASK_DELIVERY_LIMIT": "3",
    "IAAS_TASK_MAX_RETRIES": "2",
    "IAAS_TASK_RETRY_DELAY_SECONDS": "1",
}
TEMPLATE_DATABASE = "iaas_template"
WORKER_HOSTS = ("worker1", "worker2")
PARTITION_QUEUES = 8  # IAAS_TASK_PARTITION_QUEUES's default
SHARED_PARTITIONS = "32"  # 4 parts a queue: both workers get parts (see "Prefetch" above)
HOUR = dt.timedelta(hours=1)
RECEIVED = re.compile(r"Task iaas\.jobs\.part\[(jobpart-(\d+)-(\d+))\] received")
WORKER_PID = re.compile(r"^\S+@(\S+) pid (\d+)$")


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is (--quick: smaller)."""

    servers: int
    wallets: int
    scale_servers: int
    scale_wallets: int
    kills: int
    kill_pause: float  # IAAS_PAUSE_IN_METERING_BATCH for worker-kill
    broker_pause: float  # ... for broker-restart (a run of 10 to 20 s)
    customers: int
    load_seconds: float
    cut_seconds: float
    scale_repeats: int


FULL = Sizes(2000, 400, 60_000, 12_000, 5, 0.6, 0.3, 8, 24.0, 8.0, 3)
QUICK = Sizes(500, 100, 5_000, 1_000, 2, 0.6, 0.6, 4, 16.0, 7.0, 1)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def seconds_between(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    return round((end - start).total_seconds(), 1) if start and end else None


@dataclass
class Outcome:
    """One scenario's report: the table's row, and everything measured for the JSON."""

    scenario: str
    operations: str = ""
    redeliveries: int | None = None
    redeliveries_note: str = ""
    recover_s: float | None = None
    recover_note: str = ""
    checks: dict[str, bool] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks[name] = bool(ok)
        if detail:
            self.details[name] = detail
        log(f"  {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        return bool(ok)

    def note(self, text: str) -> None:
        self.notes.append(text)
        log(f"  note: {text}")

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.checks) and all(self.checks.values())


class Worker:
    """A worker host's Celery worker, started, killed and started again as systemd would
    (``-n worker@<host>``; its log appended to across starts)."""

    def __init__(self, cluster: Cluster, host: str, env: Mapping[str, str], concurrency: int = 2) -> None:
        self.cluster, self.host, self.env, self.concurrency = cluster, host, dict(env), concurrency
        self.log = cluster[host].log_path("worker")
        self.first_offset = log_size(self.log)  # where this scenario's lines begin
        self.offset = self.first_offset
        self.process: Process | None = None
        self.starts = 0

    def start(self) -> None:
        """Start it; returns at once (``wait_ready``)."""
        self.offset = log_size(self.log)
        self.process = self.cluster.start_worker(self.host, concurrency=self.concurrency, **self.env)
        self.starts += 1

    def wait_ready(self, timeout: float = 120) -> None:
        wait_for_log(self.process, " ready.", timeout=timeout, since=self.offset)

    def kill(self) -> None:
        """SIGKILL to its process group: the main process and its pool, no goodbye."""
        self.process.kill()

    def stop(self, timeout: float = 40) -> None:
        """SIGTERM (a warm shutdown), SIGKILL after ``timeout``."""
        if self.process and self.process.alive():
            self.process.terminate(timeout)

    def owns(self, pid: int) -> bool:
        """``pid`` is one of this worker's pool processes (its process group, not its
        main process): the only kind of process a scenario kills by pid."""
        if not self.process or pid == self.process.pid:
            return False
        try:
            return os.getpgid(pid) == self.process.pid
        except ProcessLookupError:
            return False

    def text(self) -> str:
        """What it logged in this scenario (every start)."""
        return read_log(self.log, self.first_offset)


class Bench:
    """The cluster as the scenarios use it: a fresh database and queues per scenario,
    workers, SQL from the beat host, ``manage.py`` on the beat host, the backlog worked off."""

    def __init__(self, cluster: Cluster, sizes: Sizes) -> None:
        self.cluster, self.sizes = cluster, sizes
        self.scenario = ""
        self.env: dict[str, str] = {}
        self.workers: dict[str, Worker] = {}
        self.apps: list[AppServer] = []
        self.beat: Process | None = None

    # --- a scenario's life ---------------------------------------------------------------------

    def prepare(self) -> None:
        """The migrated template every scenario's database is copied from."""
        self.cluster.database = TEMPLATE_DATABASE
        self.cluster.postgres.recreate_database(TEMPLATE_DATABASE)
        self.cluster.migrate()
        self.cluster.database = DATABASE

    def begin(self, scenario: str, **env: str) -> None:
        """A fresh database and queues of the scenario's own; ``env``: every Django
        process's settings for it (besides TASK_SETTINGS)."""
        self.end()
        self.scenario = scenario
        self.env = {**TASK_SETTINGS, "IAAS_TASK_QUEUE_PREFIX": f"iaas.{scenario}", **env}
        self.cluster.postgres.copy_database(self.cluster.database, TEMPLATE_DATABASE)

    def end(self) -> None:
        """Stop what the scenario started (beat, apps, workers)."""
        if self.beat and self.beat.alive():
            self.beat.terminate(15)
        self.beat = None
        for app in self.apps:
            app.stop()
        self.apps = []
        self.stop_workers()

    # --- SQL and commands ------------------------------------------------------------------------

    def sql(self, query: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> list[dict]:
        """Rows of one statement as dicts, asked from the beat host."""

        def fetch() -> list[dict]:
            from psycopg.rows import dict_row

            with self.cluster.postgres.connect(self.cluster.database, row_factory=dict_row) as conn:
                return conn.execute(query, params).fetchall()

        return self.cluster["beat"].call(fetch, timeout=300)

    def one(self, query: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> dict:
        return self.sql(query, params)[0]

    def manage(
        self, *args: str, check: bool = True, timeout: float = 300, **env: str
    ) -> subprocess.CompletedProcess:
        """``manage.py <args>`` on the beat host with the scenario's settings."""
        return self.cluster.manage("beat", *args, check=check, timeout=timeout, **{**self.env, **env})

    def manage_json(self, *args: str, **env: str) -> Any:
        """A command's ``--json`` output (its stdout; logs go to stderr)."""
        return json.loads(self.manage(*args, **env).stdout)

    def seed(self, servers: int, wallets: int) -> dict:
        """bench.metering's seed, over a connection made from the beat host."""
        started = time.monotonic()
        seeded = self.cluster["beat"].call(
            metering.seed,
            self.cluster.database,
            servers=servers,
            wallets=wallets,
            connect=self.cluster.postgres.connect,
            timeout=900,
        )
        log(f"  seeded {servers:,} servers on {wallets:,} wallets in {time.monotonic() - started:.1f} s")
        return seeded

    # --- workers, beat, apps ---------------------------------------------------------------------

    def start_workers(
        self, hosts: Sequence[str] = WORKER_HOSTS, *, concurrency: int = 2, **env: str
    ) -> list[Worker]:
        """Workers on ``hosts`` (started together), once every one is ready."""
        started = []
        for host in hosts:
            worker = Worker(self.cluster, host, {**self.env, **env}, concurrency)
            worker.start()
            self.workers[host] = worker
            started.append(worker)
        for worker in started:
            worker.wait_ready()
        return started

    def stop_workers(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.workers = {}

    def start_beat(self) -> Process:
        """Celery beat on the beat host, from a schedule file of its own (a fresh one: no
        job is "missed" at its start)."""
        schedule = CLUSTER_DIR / "beat" / "celerybeat-schedule-beat"
        for stale in schedule.parent.glob(f"{schedule.name}*"):
            stale.unlink()
        self.beat = self.cluster.start_beat("beat", **self.env)
        wait_for_log(self.beat, "beat: Starting", timeout=60, since=0)
        return self.beat

    # --- job runs ----------------------------------------------------------------------------

    def run_job(self, job: str, **env: str) -> int:
        """``run_job <job>`` from the beat host: the run's id (its parts are published)."""
        return int(self.manage_json("run_job", job, "--json", **env)["run"])

    def run_row(self, run_id: int) -> dict:
        return self.one(
            "SELECT id, job, status, parts, started_at, finished_at FROM operations_jobrun WHERE id = %s",
            [run_id],
        )

    def parts(self, run_id: int) -> list[dict]:
        return self.sql(
            "SELECT index, status, attempts, worker, started_at, finished_at, summary, error "
            "FROM operations_jobpart WHERE run_id = %s ORDER BY index",
            [run_id],
        )

    def finish_run(self, run_id: int, *, timeout: float = 300) -> tuple[dict, list[dict]]:
        """Until the run succeeded; dead letters met on the way are drained and retried
        (returned, as the operator saw them)."""
        letters: list[dict] = []

        def succeeded() -> dict | None:
            if self.dlq_depth() > 0:
                letters.extend(self.drain_and_retry())
            row = self.run_row(run_id)
            return row if row["status"] == "succeeded" else None

        try:
            row = wait_until(succeeded, timeout=timeout, what=f"run {run_id} succeeded", interval=0.5)
        except TimeoutError:
            raise TimeoutError(
                f"run {run_id} not succeeded within {timeout:g} s: {self.open_parts()}"
            ) from None
        return row, letters

    # --- the broker ------------------------------------------------------------------------------

    def queue(self, suffix: str) -> str:
        return f"{self.env['IAAS_TASK_QUEUE_PREFIX']}.{suffix}"

    def dlq_depth(self) -> int:
        return self.cluster["beat"].call(queue_depth, self.cluster.rabbit.url(), self.queue("dead_letters"))

    def ready_in_work_queues(self) -> int:
        names = ["default", "events", *(f"partition.{i}" for i in range(PARTITION_QUEUES))]
        url = self.cluster.rabbit.url()
        return sum(max(0, self.cluster["beat"].call(queue_depth, url, self.queue(name))) for name in names)

    def dead_letters(self) -> list[dict]:
        """``dead_letters --json``: what the admin's "Dead letters" page lists."""
        return self.manage_json("dead_letters", "--json")

    def drain_and_retry(self) -> list[dict]:
        """Copy the dead-letter queue into the table; retry every dead one. The letters,
        as listed before the retry."""
        self.manage_json("drain_dead_letters", "--json")
        letters = self.dead_letters()
        if letters:
            retried = self.manage_json("dead_letters", "--retry", "all", "--json")["retried"]
            log(f"  {len(letters)} dead letter(s) drained, {retried} retried: {letter_words(letters)}")
        return letters

    # --- the backlog -------------------------------------------------------------------------------

    def open_parts(self) -> list[dict]:
        """Parts not finished well (queued, running, failed, waiting for a retry)."""
        return self.sql(
            "SELECT run_id, index, status, attempts, worker FROM operations_jobpart "
            "WHERE status NOT IN ('succeeded', 'problems') ORDER BY run_id, index"
        )

    def pending_outbox(self) -> int:
        return self.one("SELECT count(*) AS n FROM contracts_outboxmessage WHERE status <> 'done'")["n"]

    def work_off_backlog(self, *, timeout: float = 300) -> dict:
        """As an operator would: until no part is open (dead letters drained and retried
        on the way), then the outbox delivered; what was left, and how long it took."""
        started = time.monotonic()
        letters: list[dict] = []

        def idle() -> bool:
            if self.dlq_depth() > 0:
                letters.extend(self.drain_and_retry())
            return not self.open_parts()

        try:
            wait_until(idle, timeout=timeout, what="no job part open", interval=0.5)
        except TimeoutError:
            raise TimeoutError(f"job parts still open after {timeout:g} s: {self.open_parts()}") from None
        letters.extend(self.drain_and_retry())  # whatever died meanwhile (nothing, normally)
        delivered = 0
        for _ in range(20):
            if not self.pending_outbox():
                break
            delivered += self.manage_json("deliver_events", "--retry-failed", "--json")["delivered"]
        left = {
            "pending_outbox": self.pending_outbox(),
            "open_parts": len(self.open_parts()),
            "dead_letters_dead": len(self.dead_letters()),
            "dead_letter_queue": self.dlq_depth(),
            "ready_in_work_queues": self.ready_in_work_queues(),
        }
        return {
            "seconds": round(time.monotonic() - started, 1),
            "dead_letters_retried": len(letters),
            "dead_letters": letters,
            "events_delivered": delivered,
            "left": left,
            "empty": not any(left.values()),
        }


def letter_words(letters: Sequence[Mapping[str, Any]]) -> str:
    reasons = Counter(f"{letter['reason']} x{letter['deaths']}" for letter in letters)
    return ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))


def worker_of(part: Mapping[str, Any]) -> tuple[str, int] | None:
    """(host, pool pid) from a part's ``worker`` ("worker@worker1 pid 1234")."""
    found = WORKER_PID.match(part.get("worker") or "")
    return (found.group(1), int(found.group(2))) if found else None


def part_words(parts: Sequence[Mapping[str, Any]]) -> str:
    """How many parts each host ran (the latest delivery of each)."""
    hosts = Counter((worker_of(p) or ("?", 0))[0] for p in parts)
    return ", ".join(f"{host} {count}" for host, count in sorted(hosts.items()))


def redeliveries(parts: Sequence[Mapping[str, Any]]) -> int:
    """Deliveries that started a part again: the sum of attempts - 1."""
    return sum(max(0, p["attempts"] - 1) for p in parts)


def logged_at(worker: Worker, text: str, *, since: dt.datetime) -> list[dt.datetime]:
    """When ``worker`` logged a line containing ``text`` (its JSON lines' timestamps), from
    ``since`` on."""
    moments = []
    for line in worker.text().splitlines():
        if text in line and line.startswith("{"):
            with contextlib.suppress(ValueError, KeyError):
                moment = dt.datetime.fromisoformat(json.loads(line)["timestamp"])
                if moment >= since:
                    moments.append(moment)
    return moments


def receipts(workers: Sequence[Worker], run_ids: Sequence[int]) -> Counter:
    """Deliveries of each part task of these runs, as the workers logged them."""
    wanted = {str(run_id) for run_id in run_ids}
    seen: Counter = Counter()
    for worker in workers:
        for match in RECEIVED.finditer(worker.text()):
            if match.group(2) in wanted:
                seen[match.group(1)] += 1
    return seen


# --- checks ----------------------------------------------------------------------------------


def broke_servers(servers: int, wallets: int) -> int:
    """Seeded servers on wallets that cannot pay (SEED: server j on wallet 1 + (j-1) % wallets,
    every BROKE_EVERY-th wallet broke)."""
    return sum(1 for j in range(1, servers + 1) if (1 + (j - 1) % wallets) % metering.BROKE_EVERY == 0)


def reconcile_check(bench: Bench, outcome: Outcome) -> dict:
    result = bench.manage("reconcile", "--json", check=False, timeout=300)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = {"ok": False, "said": (result.stdout + result.stderr)[-800:]}
    bad = {
        k: v
        for k, v in (report.get("invariants") or {}).items()
        if isinstance(v, dict) and not v.get("ok", True)
    }
    outcome.check(
        "reconcile clean",
        result.returncode == 0 and report.get("ok") is True,
        f"exit {result.returncode}, pending events {report.get('pending_events')}"
        + (f", {bad}" if bad else ""),
    )
    outcome.measured["reconcile"] = report
    return report


def books_check(bench: Bench, outcome: Outcome) -> None:
    """bench.metering's BOOKS and I11 queries: the money and the usage agree."""
    books = bench.one(metering.BOOKS)
    i11 = bench.one(metering.I11)
    bad = {k: v for k, v in i11.items() if k not in ("servers", "active", "suspended") and v}
    outcome.measured["books"], outcome.measured["i11"] = books, i11
    outcome.check("books (I1-I4 with accrued usage)", not any(books.values()), json.dumps(books, default=str))
    outcome.check(
        "I11: each hour accrued once (usage = paid_until, per server)",
        not bad,
        f"{i11['servers']} servers, {i11['active']} active, {i11['suspended']} suspended"
        + (f"; violations {bad}" if bad else ""),
    )


def metering_check(bench: Bench, outcome: Outcome, seeded: Mapping[str, Any]) -> dict:
    """Every paying seeded server paid exactly one hour on; every server of a wallet that
    cannot pay suspended, not moved."""
    paid, due = seeded["paid_until"], seeded["paid_until"] + HOUR
    row = bench.one(
        """
        SELECT count(*) AS servers,
               count(*) FILTER (WHERE status = 'active' AND paid_until = %(due)s) AS paid_one_hour,
               count(*) FILTER (WHERE status = 'suspended' AND paid_until = %(paid)s) AS suspended,
               count(*) FILTER (WHERE paid_until < %(due)s AND status = 'active') AS not_metered,
               count(*) FILTER (WHERE paid_until > %(due)s) AS paid_ahead,
               count(*) FILTER (WHERE status NOT IN ('active', 'suspended')) AS ended
        FROM cloud_server WHERE name LIKE 'mb-%%'
        """,
        {"paid": paid, "due": due},
    )
    broke = broke_servers(seeded["servers"], seeded["wallets"])
    paying = seeded["servers"] - broke
    outcome.check(
        "nothing lost: every paying server metered one hour, every unpaid one suspended",
        row["paid_one_hour"] == paying and row["suspended"] == broke and not row["not_metered"],
        f"{row['paid_one_hour']}/{paying} paid until +1 h, {row['suspended']}/{broke} suspended, "
        f"{row['not_metered']} not metered, {row['ended']} ended",
    )
    outcome.check(
        "nothing twice: no server paid past that hour", not row["paid_ahead"], f"{row['paid_ahead']}"
    )
    return row


def settlement_check(bench: Bench, outcome: Outcome) -> dict:
    """Every usage record closed, once; every charge booked, once."""
    row = bench.one(
        """
        SELECT (SELECT count(*) FROM cloud_usage WHERE amount > 0) AS records,
               (SELECT count(*) FROM cloud_usage WHERE closed_amount < amount) AS not_closed,
               (SELECT count(*) FROM cloud_usage WHERE closed_amount > amount) AS closed_past_amount,
               (SELECT COALESCE(sum(closed_amount), 0) FROM cloud_usage) AS closed_total,
               (SELECT count(*) FROM cloud_charge) AS charges,
               (SELECT COALESCE(sum(amount), 0) FROM cloud_charge) AS charged_total,
               (SELECT count(*) FROM (SELECT subject_id FROM cloud_charge
                                      GROUP BY subject_id HAVING count(*) > 1) d) AS services_charged_twice,
               (SELECT count(*) FROM cloud_charge WHERE ledger_entry_id IS NULL) AS charges_not_booked,
               (SELECT count(*) FROM (SELECT source_id FROM billing_ledgerentry WHERE kind = 'charge'
                                      GROUP BY source_id HAVING count(*) > 1) d) AS entries_booked_twice
        """
    )
    outcome.check(
        "nothing lost: every usage record closed, every charge booked",
        not row["not_closed"] and not row["charges_not_booked"] and row["charges"] == row["records"],
        f"{row['records']} records, {row['not_closed']} not closed; {row['charges']} charges, "
        f"{row['charges_not_booked']} not booked",
    )
    outcome.check(
        "nothing twice: one charge per usage record, one ledger entry per charge",
        not row["services_charged_twice"]
        and not row["entries_booked_twice"]
        and not row["closed_past_amount"]
        and row["closed_total"] == row["charged_total"],
        f"{row['services_charged_twice']} services charged twice, {row['entries_booked_twice']} entries "
        f"booked twice, closed {row['closed_total']} = charged {row['charged_total']}",
    )
    return row


def backlog_check(outcome: Outcome, backlog: Mapping[str, Any]) -> None:
    outcome.measured["backlog"] = backlog
    outcome.check("backlog drained", backlog["empty"], json.dumps(backlog["left"]))


def recovery(
    outcome: Outcome,
    fault_at: dt.datetime | None,
    run: Mapping[str, Any],
    backlog_s: float,
    *,
    since: str = "the last fault",
) -> None:
    """Time to recover: from ``fault_at`` (``since`` says what happened then) to the run's
    end (the database's clock: the same machine), and the backlog drained after that."""
    outcome.recover_s = seconds_between(fault_at, run.get("finished_at"))
    outcome.recover_note = (
        f"run done {outcome.recover_s} s after {since}; backlog worked off in {backlog_s} s"
    )
    outcome.measured["run"] = {
        **run,
        "duration_s": seconds_between(run.get("started_at"), run.get("finished_at")),
    }


# --- 1. worker-kill --------------------------------------------------------------------------


def batch_open_on(bench: Bench, run_id: int, worker: Worker) -> dict | None:
    """The parts RUNNING in ``worker``'s pool processes (this start's: a part a killed
    process left RUNNING is not one) while it holds a transaction open (a batch waiting
    after its writes); ``{"over": True}`` once the run is over; else None."""
    row = bench.one(
        """
        SELECT (SELECT status FROM operations_jobrun WHERE id = %(run)s) AS run_status,
               (SELECT json_agg(json_build_array(index, attempts, worker)) FROM operations_jobpart
                WHERE run_id = %(run)s AND status = 'running' AND worker LIKE %(worker)s) AS running,
               (SELECT count(*) FROM pg_stat_activity
                WHERE client_addr = %(address)s::inet AND state = 'idle in transaction') AS open_transactions
        """,
        {"run": run_id, "worker": f"%@{worker.host} pid %", "address": bench.cluster[worker.host].address},
    )
    if row["run_status"] == "succeeded":
        return {"over": True}
    running = {
        index: attempts
        for index, attempts, name in row["running"] or []
        if worker.owns(worker_of({"worker": name})[1])
    }
    if running and row["open_transactions"]:
        return {"running": running, "open_transactions": row["open_transactions"]}
    return None


def kill_mid_batch(
    bench: Bench, run_id: int, worker: Worker, number: int, letters: list[dict]
) -> dict | None:
    """Wait for ``worker`` to be inside a batch, SIGKILL it, start it again after 1 s.
    Meanwhile, dead letters are drained and retried at once, as an operator would (kept
    in ``letters``): the kills dead-letter parts (see worker_kill)."""

    def batch_open() -> dict | None:
        if bench.dlq_depth() > 0:
            letters.extend(bench.drain_and_retry())
        return batch_open_on(bench, run_id, worker)

    try:
        target = wait_until(
            batch_open,
            timeout=60,
            what=f"a batch open on {worker.host}",
            interval=0.1,
        )
    except TimeoutError:
        return None
    if target.get("over"):
        return None
    killed = {"number": number, "at": utcnow(), **target}  # before: the kill returns its messages at once
    worker.kill()
    log(
        f"  kill {number}: {worker.host} SIGKILLed running parts {sorted(target['running'])}, "
        f"{target['open_transactions']} transaction(s) open"
    )
    time.sleep(1.0)  # systemd's RestartSec
    worker.start()
    worker.wait_ready()
    return killed


def worker_kill(bench: Bench) -> list[Outcome]:
    sizes = bench.sizes
    outcome = Outcome("worker-kill")
    bench.begin(
        "worker-kill",
        IAAS_BATCH_SIZE="50",
        IAAS_PAUSE_IN_METERING_BATCH=str(sizes.kill_pause),
        IAAS_TASK_PARTITIONS=SHARED_PARTITIONS,
    )
    seeded = bench.seed(sizes.servers, sizes.wallets)
    workers = bench.start_workers()
    run_id = bench.run_job("meter")
    kills: list[dict] = []
    letters: list[dict] = []
    for number in range(1, sizes.kills + 1):
        killed = kill_mid_batch(bench, run_id, bench.workers["worker1"], number, letters)
        if killed is None:
            outcome.note(f"the run was over (or worker1 got no part) before kill {number}")
            break
        kills.append(killed)
    run, more = bench.finish_run(run_id)
    letters += more
    parts = bench.parts(run_id)
    attempts = {part["index"]: part["attempts"] for part in parts}
    for kill in kills:
        kill["redelivered"] = sorted(i for i, before in kill["running"].items() if attempts[i] > before)
        kill["received_again_after_s"] = received_again(workers, run_id, kill)
    backlog = bench.work_off_backlog()
    landed = [kill for kill in kills if kill["redelivered"] and kill["open_transactions"]]
    row = metering_check(bench, outcome, seeded)
    outcome.check(
        "kills landed mid-batch (part RUNNING on worker1, transaction open, attempts up after)",
        len(landed) == len(kills) == sizes.kills,
        f"{len(landed)} of {len(kills)} ({sizes.kills} planned)",
    )
    collateral = collateral_dead_letters(letters, kills)
    finish_checks(bench, outcome, backlog)
    delivered = receipts(workers, [run_id])
    if collateral:
        outcome.note(
            f"{len(collateral)} of {len(letters)} dead letters were parts no kill (or not more than "
            f"IAAS_TASK_DELIVERY_LIMIT kills) found running: they sat reserved in worker1 (quorum queues "
            f"prefetch per queue) and each kill returned them, which RabbitMQ 3.10 counts as a delivery; "
            f"past the limit ({TASK_SETTINGS['IAAS_TASK_DELIVERY_LIMIT']} here, 10 by default: the README "
            f"says why) they were dead-lettered, and the run waited for the operator's retry "
            f"(part: kills that found it running: {dict(sorted(collateral.items()))})"
        )
    outcome.operations = (
        f"{row['paid_one_hour']:,} servers metered, {row['suspended']} suspended; "
        f"{len(kills)} SIGKILLs of worker1 mid-batch"
    )
    outcome.redeliveries = redeliveries(parts)
    outcome.redeliveries_note = (
        f"{sum(delivered.values()) - len(parts)} deliveries beyond one per part in the logs; "
        f"{len(letters) + backlog['dead_letters_retried']} dead-lettered and retried"
        + (
            f" ({letter_words(letters + backlog['dead_letters'])})"
            if letters or backlog["dead_letters"]
            else ""
        )
    )
    recovery(outcome, kills[-1]["at"] if kills else None, run, backlog["seconds"], since="the last kill")
    waits = [s for kill in kills for s in kill["received_again_after_s"].values() if s is not None]
    outcome.recover_note += (
        f"; a killed part was received again {min(waits, default=None)} to {max(waits, default=None)} s "
        f"after its kill"
    )
    outcome.measured.update(
        seed=seeded,
        kills=kills,
        parts=parts_table(parts),
        dead_letters=letters,
        dead_lettered_by_kills_alone=collateral,
        ran_on=part_words(parts),
        deliveries_in_logs=dict(delivered),
    )
    return [outcome]


def received_again(
    workers: Sequence[Worker], run_id: int, kill: Mapping[str, Any]
) -> dict[int, float | None]:
    """For each part a kill found running: how long until a worker received it again."""
    again = {}
    for index in kill["running"]:
        moments = [
            moment
            for worker in workers
            for moment in logged_at(
                worker, f"Task iaas.jobs.part[jobpart-{run_id}-{index}] received", since=kill["at"]
            )
        ]
        again[index] = seconds_between(kill["at"], min(moments)) if moments else None
    return again


def collateral_dead_letters(letters: Sequence[Mapping[str, Any]], kills: Sequence[Mapping[str, Any]]) -> dict:
    """Parts dead-lettered for their delivery count though no kill found them running:
    index -> how many kills did."""
    killed_running = Counter(index for kill in kills for index in kill["running"])
    found = {}
    for letter in letters:
        index = re.search(r"index=(\d+)", letter["task"])
        if letter["reason"] == "delivery_limit" and index:
            part = int(index.group(1))
            if killed_running[part] <= int(TASK_SETTINGS["IAAS_TASK_DELIVERY_LIMIT"]):
                found[part] = killed_running[part]
    return found


def parts_table(parts: Sequence[Mapping[str, Any]]) -> list[dict]:
    return [
        {"index": p["index"], "status": p["status"], "attempts": p["attempts"], "worker": p["worker"]}
        for p in parts
    ]


def finish_checks(bench: Bench, outcome: Outcome, backlog: Mapping[str, Any]) -> None:
    """What every scenario checks last: the books, I11, reconcile, the backlog."""
    books_check(bench, outcome)
    reconcile_check(bench, outcome)
    backlog_check(outcome, backlog)


# --- 2. broker-restart ----------------------------------------------------------------------------


def mid_run(bench: Bench, run_id: int) -> dict | None:
    """Once a quarter of the run's parts finished while others run."""
    row = bench.one(
        "SELECT count(*) FILTER (WHERE status = 'succeeded') AS done, "
        "count(*) FILTER (WHERE status = 'running') AS running, count(*) AS parts "
        "FROM operations_jobpart WHERE run_id = %s",
        [run_id],
    )
    return row if row["done"] >= row["parts"] // 4 and row["running"] else None


def broker_restart(bench: Bench) -> list[Outcome]:
    sizes = bench.sizes
    outcome = Outcome("broker-restart")
    bench.begin(
        "broker-restart",
        IAAS_BATCH_SIZE="50",
        IAAS_PAUSE_IN_METERING_BATCH=str(sizes.broker_pause),
        IAAS_TASK_PARTITIONS=SHARED_PARTITIONS,
    )
    seeded = bench.seed(sizes.servers, sizes.wallets)
    workers = bench.start_workers()
    time.sleep(DECLARE_SETTLE_SECONDS)  # the workers' quorum queues settle before any kill
    run_id = bench.run_job("meter")
    at_kill = wait_until(lambda: mid_run(bench, run_id), timeout=120, what="the run under way", interval=0.2)
    rabbit = bench.cluster.rabbit
    killed_at = utcnow()
    rabbit.kill()
    log(
        f"  RabbitMQ SIGKILLed with {at_kill['done']} of {at_kill['parts']} parts done, "
        f"{at_kill['running']} running"
    )
    time.sleep(3)
    rabbit.start()
    up_at = utcnow()
    log(f"  RabbitMQ back after {seconds_between(killed_at, up_at)} s")
    rabbit.wait_quorum_leaders()
    leaders_at = utcnow()
    log(f"  every quorum queue has a Raft leader ({seconds_between(up_at, leaders_at)} s to ask them all)")
    run, letters = bench.finish_run(run_id)
    parts = bench.parts(run_id)
    alive = {worker.host: worker.process.alive() for worker in workers}
    backlog = bench.work_off_backlog()
    row = metering_check(bench, outcome, seeded)
    outcome.check("the workers lived through it and the run finished", all(alive.values()), json.dumps(alive))
    finish_checks(bench, outcome, backlog)
    lines = {
        worker.host: {
            "connection_lost": worker.text().count("Connection to broker lost"),
            "tasks_terminated": worker.text().count("cannot be acknowledged after a connection loss"),
            "reconnected_after_s": seconds_between(
                killed_at, next(iter(logged_at(worker, "Connected to amqp://", since=killed_at)), None)
            ),
        }
        for worker in workers
    }
    delivered = receipts(workers, [run_id])
    outcome.operations = (
        f"{row['paid_one_hour']:,} servers metered, {row['suspended']} suspended; "
        f"broker down {seconds_between(killed_at, up_at)} s mid-run"
    )
    outcome.redeliveries = redeliveries(parts)
    outcome.redeliveries_note = (
        f"{sum(delivered.values()) - len(parts)} deliveries beyond one per part in the logs; "
        f"{len(letters) + backlog['dead_letters_retried']} dead-lettered and retried"
    )
    recovery(outcome, up_at, run, backlog["seconds"], since="the broker was back")
    reconnected = [w["reconnected_after_s"] for w in lines.values() if w["reconnected_after_s"] is not None]
    outcome.recover_note += (
        f" (it was back {seconds_between(killed_at, up_at)} s after the kill, the workers reconnected "
        f"{max(reconnected, default=None)} s after it; {sum(w['tasks_terminated'] for w in lines.values())} "
        f"running parts were terminated and redelivered)"
    )
    outcome.measured.update(
        seed=seeded,
        at_kill=at_kill,
        killed_at=killed_at,
        up_at=up_at,
        leaders_at=leaders_at,
        workers=lines,
        parts=parts_table(parts),
        ran_on=part_words(parts),
        deliveries_in_logs=dict(delivered),
        dead_letters=letters,
    )
    return [outcome]


# --- 3. app-cut ----------------------------------------------------------------------------------

START_BALANCE = 120  # 1.20 EUR a customer: their last purchases are refused (402)
PURCHASE_PLAN = "s-1vcpu-1gb"
PURCHASE_TIMEOUT = 2.0  # a client that hears nothing this long tries the other host
IN_PROGRESS = "idempotency_request_in_progress"


@dataclass
class Purchase:
    """One server bought with one Idempotency-Key, and every try it took."""

    customer: int
    key: str
    name: str
    tries: list[str] = field(default_factory=list)
    final: int | None = None
    code: str = ""
    server_id: str | None = None
    replayed: bool = False
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    @property
    def seconds(self) -> float:
        return seconds_between(self.started_at, self.finished_at) or 0.0


class Buyer(threading.Thread):
    """A customer on the client host: purchases one after the other until ``until`` (or
    ``max_purchases``), each retried with its key until a definitive answer."""

    def __init__(
        self,
        customer: Mapping[str, Any],
        apps: Sequence[AppServer],
        netns: str,
        until: float,
        max_purchases: int,
    ) -> None:
        super().__init__(daemon=True, name=f"buyer-{customer['index']}")
        self.customer, self.apps, self.netns = customer, list(apps), netns
        self.until, self.max_purchases = until, max_purchases
        self.purchases: list[Purchase] = []

    def run(self) -> None:
        enter_netns(self.netns)  # this thread is on the client host from here on
        index = self.customer["index"]
        for n in range(1, self.max_purchases + 1):
            if time.monotonic() >= self.until:
                break
            purchase = Purchase(index, f"cut-{index}-{n}-{uuid.uuid4().hex[:8]}", f"cut-{index}-{n}")
            self.purchases.append(purchase)
            self.buy(purchase, self.apps[(index + n) % len(self.apps)])

    def buy(self, purchase: Purchase, app: AppServer, budget: float = 90) -> None:
        started = time.monotonic()
        purchase.started_at = utcnow()
        body = {"name": purchase.name, "plan": PURCHASE_PLAN, "wallet": self.customer["wallet"]}
        headers = {"Authorization": f"Token {self.customer['token']}", "Idempotency-Key": purchase.key}
        while time.monotonic() - started < budget:
            answer = http_request(
                "POST",
                app.url("/api/v1/cloud/servers/"),
                body=body,
                headers=headers,
                timeout=PURCHASE_TIMEOUT,
            )
            if answer.status is None:
                purchase.tries.append(f"{app.host.name}: no answer")
                app = self.apps[(self.apps.index(app) + 1) % len(self.apps)]  # the other host
                continue
            code = answer.body.get("code", "") if isinstance(answer.body, dict) else ""
            purchase.tries.append(f"{app.host.name}: {answer.status}{' ' + code if code else ''}")
            if answer.status in (409, 503) and (answer.status == 503 or code == IN_PROGRESS):
                time.sleep(0.25)
                continue
            purchase.final, purchase.code, purchase.replayed = answer.status, code, answer.replayed
            if answer.status == 201:
                purchase.server_id = answer.body["id"]
            break
        purchase.finished_at = utcnow()


def register_customer(client: Host, app: AppServer, index: int) -> dict:
    """A customer registered through the API, with a EUR wallet topped up by START_BALANCE."""
    username = f"cut-{index}-{uuid.uuid4().hex[:6]}"
    registered = client.http(
        "POST",
        app.url("/api/v1/auth/register/"),
        body={"username": username, "email": f"{username}@bench.example", "password": uuid.uuid4().hex},
        timeout=20,
    )
    if registered.status != 201:
        raise RuntimeError(f"register {username}: {registered} {registered.body}")
    token = registered.body["token"]

    def post(path: str, body: dict) -> dict:
        headers = {"Authorization": f"Token {token}", "Idempotency-Key": uuid.uuid4().hex}
        answer = client.http("POST", app.url(path), body=body, headers=headers, timeout=20)
        if answer.status != 201:
            raise RuntimeError(f"{path}: {answer} {answer.body}")
        return answer.body

    wallet = post("/api/v1/wallets/", {"currency": "EUR"})["id"]
    post(f"/api/v1/wallets/{wallet}/top-ups/", {"amount": START_BALANCE})
    return {"index": index, "username": username, "token": token, "wallet": wallet}


def sessions_of(bench: Bench, host: Host) -> list[dict]:
    """``host``'s sessions as PostgreSQL sees them."""
    return bench.sql(
        "SELECT pid, state, xact_start IS NOT NULL AS in_transaction, "
        "round(extract(epoch FROM now() - state_change)::numeric, 1)::float AS state_for_s "
        "FROM pg_stat_activity WHERE client_addr = %s::inet ORDER BY pid",
        [host.address],
    )


def cut_during_transaction(bench: Bench, host: Host, seconds: float) -> dict:
    """Pull ``host``'s cable when PostgreSQL shows one of its sessions inside a transaction
    (within 3 s, else anyway), watch its sessions while it is cut, plug it back."""
    deadline = time.monotonic() + 3
    open_at_cut: list[dict] = []
    while time.monotonic() < deadline:
        open_at_cut = [s for s in sessions_of(bench, host) if s["in_transaction"]]
        if open_at_cut:
            break
    host.cut()
    cut_at = utcnow()
    log(f"  {host.name} cut off; its sessions in a transaction then: {open_at_cut}")
    samples = []
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        samples.append({"after_s": seconds_between(cut_at, utcnow()), "sessions": sessions_of(bench, host)})
        time.sleep(0.5)
    host.restore()
    restored_at = utcnow()
    ended = [transaction_end(session["pid"], samples) for session in open_at_cut]
    log(
        f"  {host.name} restored after {seconds_between(cut_at, restored_at)} s; "
        f"transactions open at the cut: {transaction_words(ended)}"
    )
    return {
        "cut_at": cut_at,
        "restored_at": restored_at,
        "in_transaction_at_cut": open_at_cut,
        "transactions_ended": ended,
        "samples": samples,
    }


def transaction_end(pid: int, samples: Sequence[Mapping[str, Any]]) -> dict:
    """How a session's transaction open at the cut ended, by the samples taken during
    the cut: the session gone (PostgreSQL ended it), or still there out of its
    transaction (its COMMIT or ROLLBACK had reached the server as the cable went)."""
    for sample in samples:
        session = next((x for x in sample["sessions"] if x["pid"] == pid), None)
        if session is None:
            return {"pid": pid, "after_s": sample["after_s"], "how": "ended by PostgreSQL"}
        if not session["in_transaction"]:
            return {"pid": pid, "after_s": sample["after_s"], "how": "finished by app1 as the cable went"}
    return {"pid": pid, "after_s": None, "how": "still open when the cable was back"}


def transaction_words(ended: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(f"{e['how']} after {e['after_s']} s" for e in ended) or "none open"


def plan_price(client: Host, app: AppServer) -> int:
    plans = client.http("GET", app.url("/api/v1/cloud/plans/"), timeout=20).body
    listed = plans["results"] if isinstance(plans, dict) else plans
    return next(plan["price_per_hour"] for plan in listed if plan["id"] == PURCHASE_PLAN)


def app_cut(bench: Bench) -> list[Outcome]:
    sizes = bench.sizes
    outcome = Outcome("app-cut")
    bench.begin("app-cut")
    client = bench.cluster["client"]
    pg_log = bench.cluster.postgres.server.dir / "server.log"
    pg_log_from = log_size(pg_log)
    app_env = {
        **bench.env,
        "IAAS_IDLE_IN_TRANSACTION_TIMEOUT_MS": "5000",
        "IAAS_THROTTLE_REGISTER": "100000/minute",
        "IAAS_THROTTLE_TOKEN": "100000/minute",
        "IAAS_THROTTLE_USER": "10000000/minute",
        "IAAS_THROTTLE_ANON": "10000000/minute",
    }
    bench.apps = [bench.cluster.start_app(name, **app_env) for name in ("app1", "app2")]
    app1, app2 = bench.apps
    bench.start_workers()
    bench.start_beat()  # the deliver job settles purchases every 10 s, as in production
    price = plan_price(client, app2)
    customers = [register_customer(client, app2, index) for index in range(sizes.customers)]
    until = time.monotonic() + sizes.load_seconds
    buyers = [Buyer(c, bench.apps, client.netns, until, max_purchases=400) for c in customers]
    for buyer in buyers:
        buyer.start()
    time.sleep(sizes.load_seconds / 4)
    cut = cut_during_transaction(bench, app1.host, sizes.cut_seconds)
    for buyer in buyers:
        buyer.join(timeout=sizes.load_seconds + 180)
    if any(buyer.is_alive() for buyer in buyers):
        raise TimeoutError("a buyer did not finish")
    bench.beat.terminate(15)
    purchases = [p for buyer in buyers for p in buyer.purchases]
    backlog = bench.work_off_backlog()
    audit = purchase_audit(bench, outcome, customers, purchases, price)
    finish_checks(bench, outcome, backlog)
    pg_said = read_log(pg_log, pg_log_from)
    ended_by_pg = pg_said.count("idle-in-transaction timeout")
    tally = purchase_tally(purchases)
    troubled = [p for p in purchases if len(p.tries) > 1]
    settled_at = max((p.finished_at for p in troubled), default=None)
    outcome.operations = (
        f"{len(purchases)} purchases by {len(customers)} customers: {tally['final'].get('201', 0)} x 201 "
        f"({tally['replayed_201']} replayed), {tally['final'].get('402', 0)} x 402; "
        f"app1 cut {sizes.cut_seconds:g} s"
    )
    outcome.redeliveries = tally["retried"]
    outcome.redeliveries_note = (
        f"purchases retried with their key (no answer {tally['no_answer']}, 409 in progress "
        f"{tally['in_progress']}, 503 {tally['unavailable']}); not job parts"
    )
    outcome.recover_s = seconds_between(cut["cut_at"], settled_at)
    outcome.recover_note = (
        f"the last purchase that had to retry was answered {outcome.recover_s} s after the cut "
        f"(the cable was back after {seconds_between(cut['cut_at'], cut['restored_at'])} s; slowest "
        f"purchase {max((p.seconds for p in troubled), default=0.0)} s); transactions of app1 open at the "
        f"cut: {transaction_words(cut['transactions_ended'])}; "
        f"backlog worked off in {backlog['seconds']} s"
    )
    outcome.measured.update(
        price=price,
        cut=cut,
        postgres_ended_idle_in_transaction=ended_by_pg,
        tally=tally,
        audit=audit,
        customers=[{k: v for k, v in c.items() if k != "token"} for c in customers],
        retried_purchases=[asdict(p) for p in troubled],
    )
    outcome.note(
        f"PostgreSQL ended {ended_by_pg} session(s) for idle-in-transaction timeout "
        f"(IAAS_IDLE_IN_TRANSACTION_TIMEOUT_MS=5000 on the app hosts)"
    )
    return [outcome]


def purchase_tally(purchases: Sequence[Purchase]) -> dict:
    tries = [t for p in purchases for t in p.tries]
    return {
        "purchases": len(purchases),
        "final": dict(Counter(str(p.final) for p in purchases)),
        "replayed_201": sum(1 for p in purchases if p.final == 201 and p.replayed),
        "retried": sum(1 for p in purchases if len(p.tries) > 1),
        "no_answer": sum(1 for t in tries if t.endswith("no answer")),
        "in_progress": sum(1 for t in tries if IN_PROGRESS in t),
        "unavailable": sum(1 for t in tries if ": 503" in t),
        "gave_up": sum(1 for p in purchases if p.final is None),
        "other": dict(Counter(str(p.final) for p in purchases if p.final not in (201, 402, None))),
        "tries": len(tries),
    }


def purchase_audit(
    bench: Bench,
    outcome: Outcome,
    customers: Sequence[Mapping[str, Any]],
    purchases: Sequence[Purchase],
    price: int,
) -> dict:
    """The database against what the clients were told."""
    wallets = {c["index"]: c["wallet"] for c in customers}
    servers = {
        (str(row["wallet_id"]), row["name"]): row
        for row in bench.sql(
            "SELECT wallet_id, name, count(*) AS n, min(id::text) AS id FROM cloud_server "
            "WHERE wallet_id = ANY(%s::uuid[]) GROUP BY wallet_id, name",
            [list(wallets.values())],
        )
    }
    lost, doubled, wrong, unacknowledged = [], [], [], []
    for p in purchases:
        found = servers.pop((wallets[p.customer], p.name), None)
        count = found["n"] if found else 0
        if p.final == 201 and count == 0:
            lost.append(p.key)
        elif count > 1:
            doubled.append(p.key)
        elif p.final == 201 and found["id"] != p.server_id:
            wrong.append(p.key)
        elif p.final != 201 and count:
            unacknowledged.append(p.key)
    strays = list(servers)  # servers no purchase names
    balances = {
        str(row["id"]): row["balance"]
        for row in bench.sql(
            "SELECT id, balance FROM billing_wallet WHERE id = ANY(%s::uuid[])", [list(wallets.values())]
        )
    }
    off = {}
    for customer in customers:
        bought = sum(1 for p in purchases if p.customer == customer["index"] and p.final == 201)
        expected = START_BALANCE - bought * price
        if balances.get(customer["wallet"]) != expected:
            off[customer["wallet"]] = {"expected": expected, "found": balances.get(customer["wallet"])}
    gave_up = [p.key for p in purchases if p.final is None]
    other = [p.key for p in purchases if p.final not in (201, 402, None)]
    outcome.check("every 201 exists (nothing lost)", not lost, f"{len(lost)} lost")
    outcome.check(
        "each key made one server at most, a 201's is the one named",
        not doubled and not wrong and not strays,
        f"{len(doubled)} keys with two servers, {len(wrong)} answered another id, {len(strays)} strays",
    )
    outcome.check(
        "every purchase answered 201 or 402 (none given up, none unacknowledged)",
        not gave_up and not other and not unacknowledged,
        f"{len(gave_up)} given up, {len(other)} other answers, {len(unacknowledged)} made without a 201",
    )
    outcome.check(
        "wallet balance = top-up - acknowledged purchases (after settlement)",
        not off,
        f"{len(customers) - len(off)}/{len(customers)} agree" + (f": {off}" if off else ""),
    )
    return {
        "lost": lost,
        "doubled": doubled,
        "answered_another_id": wrong,
        "strays": strays,
        "unacknowledged": unacknowledged,
        "gave_up": gave_up,
        "other": other,
        "balances_off": off,
    }


# --- 4. double-publish --------------------------------------------------------------------------


def double_publish(bench: Bench) -> list[Outcome]:
    sizes = bench.sizes
    outcome = Outcome("double-publish")
    bench.begin("double-publish", IAAS_REPEAT_PUBLISH="2")
    seeded = bench.seed(sizes.servers, sizes.wallets)
    workers = bench.start_workers()
    runs: dict[str, dict] = {}
    for job in ("meter", "settle", "deliver"):
        run_id = bench.run_job(job)
        run, letters = bench.finish_run(run_id)
        parts = bench.parts(run_id)
        runs[job] = {"run": run, "parts": parts, "dead_letters": letters}
        log(f"  {job}: run {run_id} succeeded in {seconds_between(run['started_at'], run['finished_at'])} s")
    backlog = bench.work_off_backlog()
    run_ids = [runs[job]["run"]["id"] for job in runs]
    delivered = receipts(workers, run_ids)
    part_ids = [f"jobpart-{runs[job]['run']['id']}-{p['index']}" for job in runs for p in runs[job]["parts"]]
    twice = sum(1 for task_id in part_ids if delivered[task_id] >= 2)
    all_parts = [p for job in runs for p in runs[job]["parts"]]
    outcome.check(
        "every part published twice (received twice in the workers' logs)",
        twice == len(part_ids),
        f"{twice} of {len(part_ids)} parts received twice or more, {sum(delivered.values())} receipts",
    )
    metered = metering_check(bench, outcome, seeded)
    settled = settlement_check(bench, outcome)
    finish_checks(bench, outcome, backlog)
    outcome.operations = (
        f"{metered['paid_one_hour']:,} servers metered, {settled['records']:,} usage records closed into "
        f"{settled['charges']:,} charges, booked by the deliver run ({backlog['events_delivered']} events "
        f"left after it)"
    )
    outcome.redeliveries = redeliveries(all_parts)
    outcome.redeliveries_note = (
        f"{sum(delivered.values()) - len(part_ids)} duplicates published and received; a duplicate "
        f"that found its part running ran it alongside ({outcome.redeliveries}), one that found it done "
        f"did nothing"
    )
    outcome.recover_s = None
    outcome.recover_note = (
        "no fault to recover from (every run succeeded: "
        + ", ".join(
            f"{job} {seconds_between(r['run']['started_at'], r['run']['finished_at'])} s"
            for job, r in runs.items()
        )
        + ")"
    )
    outcome.measured.update(
        seed=seeded,
        runs={
            job: {"run": r["run"], "parts": parts_table(r["parts"]), "ran_on": part_words(r["parts"])}
            for job, r in runs.items()
        },
        deliveries_in_logs=dict(delivered),
    )
    return [outcome]


# --- 5. poison -------------------------------------------------------------------------------------


def poison(bench: Bench) -> list[Outcome]:
    return [poison_failing(bench), poison_killer(bench)]


def poison_failing(bench: Bench) -> Outcome:
    """(a) Every part raises: retried, rejected into the dead-letter queue, listed,
    retried by the operator once the fix is deployed."""
    sizes = bench.sizes
    outcome = Outcome("poison (a): a bug deployed")
    bench.begin("poison-a")
    seeded = bench.seed(sizes.servers, sizes.wallets)
    bench.start_workers()
    meter_id = bench.run_job("meter")
    bench.finish_run(meter_id)
    bench.stop_workers()
    bench.start_workers(IAAS_FAIL_IN_JOB_PART="1")
    settle_id = bench.run_job("settle")
    parts_n = bench.run_row(settle_id)["parts"]
    wait_until(
        lambda: bench.dlq_depth() >= parts_n, timeout=180, what="every part dead-lettered", interval=0.5
    )
    failed = bench.parts(settle_id)
    run_failed = bench.run_row(settle_id)
    drained = bench.manage_json("drain_dead_letters", "--json")
    letters = bench.dead_letters()
    log(f"  {len(letters)} dead letter(s): {letter_words(letters)}; run {run_failed['status']}")
    bench.stop_workers()
    bench.start_workers()  # the fix deployed
    fixed_at = utcnow()
    retried = bench.manage_json("dead_letters", "--retry", "all", "--json")["retried"]
    run, more = bench.finish_run(settle_id)
    parts = bench.parts(settle_id)
    backlog = bench.work_off_backlog()
    tries = 1 + int(TASK_SETTINGS["IAAS_TASK_MAX_RETRIES"])
    outcome.check(
        f"each part failed {tries} times (1 + IAAS_TASK_MAX_RETRIES), then was dead-lettered",
        all(p["status"] == "failed" and p["attempts"] == tries for p in failed)
        and run_failed["status"] == "failed",
        f"attempts {sorted(Counter(p['attempts'] for p in failed).items())}, run {run_failed['status']}",
    )
    outcome.check(
        "dead letters drained and listed, reason rejected",
        drained["copied"] == parts_n == len(letters) and {x["reason"] for x in letters} == {"rejected"},
        f"copied {drained['copied']}, listed {len(letters)}: {letter_words(letters)}",
    )
    outcome.check(
        "retried after the fix: the run succeeded",
        retried == parts_n
        and run["status"] == "succeeded"
        and all(p["status"] == "succeeded" for p in parts),
        f"retried {retried}, run {run['status']}",
    )
    settled = settlement_check(bench, outcome)
    finish_checks(bench, outcome, backlog)
    outcome.operations = (
        f"settle run of {parts_n} parts: {parts_n} dead letters (rejected), then "
        f"{settled['records']:,} usage records closed once"
    )
    outcome.redeliveries = redeliveries(parts)
    outcome.redeliveries_note = (
        f"{parts_n} x {tries - 1} retries, then 1 delivery each after the operator's retry"
    )
    recovery(outcome, fixed_at, run, backlog["seconds"], since="the fix was deployed (and retried)")
    outcome.measured.update(
        seed=seeded,
        failed_parts=parts_table(failed),
        dead_letters_listed=letters,
        retried=retried,
        parts=parts_table(parts),
        dead_letters_after_retry=more,
    )
    return outcome


def poison_killer(bench: Bench) -> Outcome:
    """(b) A message that kills its worker every time: dead-lettered past the delivery
    limit, then retried on healthy workers."""
    sizes = bench.sizes
    outcome = Outcome("poison (b): kills its worker")
    bench.begin("poison-b")
    bench.seed(sizes.servers, sizes.wallets)
    bench.start_workers(IAAS_PAUSE_IN_JOB_PART="30")
    run_id = bench.run_job("release_idle")
    kills = kill_each_attempt(bench, run_id)
    last_kill = kills[-1]["at"]
    drained = bench.manage_json("drain_dead_letters", "--json")
    letters = bench.dead_letters()
    log(f"  {len(kills)} kills; {len(letters)} dead letter(s): {letter_words(letters)}")
    bench.stop_workers()
    bench.start_workers()  # the workers as they run every day
    fixed_at = utcnow()
    retried = bench.manage_json("dead_letters", "--retry", "all", "--json")["retried"]
    run, more = bench.finish_run(run_id)
    parts = bench.parts(run_id)
    backlog = bench.work_off_backlog()
    limit = int(TASK_SETTINGS["IAAS_TASK_DELIVERY_LIMIT"])
    outcome.check(
        "each delivery killed its pool process; dead-lettered past the delivery limit",
        drained["copied"] == 1 and len(letters) == 1 and letters[0]["reason"] == "delivery_limit",
        f"{len(kills)} deliveries killed (limit {limit}); {letter_words(letters)}",
    )
    outcome.check(
        "retried on healthy workers: the run succeeded",
        retried == 1 and run["status"] == "succeeded" and parts[0]["status"] == "succeeded",
        f"retried {retried}, part attempts {parts[0]['attempts']}",
    )
    finish_checks(bench, outcome, backlog)
    outcome.operations = (
        f"release_idle (1 part): {len(kills)} pool processes SIGKILLed, 1 dead letter (delivery_limit)"
    )
    outcome.redeliveries = redeliveries(parts)
    outcome.redeliveries_note = f"{len(kills)} deliveries killed, then 1 after the operator's retry"
    recovery(outcome, fixed_at, run, backlog["seconds"], since="healthy workers started (and retried)")
    outcome.recover_note += f" (dead-lettered {seconds_between(last_kill, fixed_at)} s before that, drained)"
    outcome.measured.update(
        kills=kills,
        dead_letters_listed=letters,
        parts=parts_table(parts),
        retried=retried,
        dead_letters_after_retry=more,
    )
    return outcome


def kill_each_attempt(bench: Bench, run_id: int, *, timeout: float = 240) -> list[dict]:
    """SIGKILL the pool process running the part, at each new attempt, until the broker
    dead-letters its message."""
    kills: list[dict] = []
    deadline = time.monotonic() + timeout
    while bench.dlq_depth() <= 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no dead letter after {len(kills)} kills: {bench.parts(run_id)}")
        part = bench.parts(run_id)[0]
        seen = max((k["attempt"] for k in kills), default=0)
        if part["status"] == "running" and part["attempts"] > seen:
            host, pid = worker_of(part)
            worker = bench.workers[host]
            if not worker.owns(pid):
                raise RuntimeError(f"pid {pid} is not a pool process of {host}'s worker: not killed")
            os.kill(pid, signal.SIGKILL)
            kills.append({"attempt": part["attempts"], "host": host, "pid": pid, "at": utcnow()})
            log(f"  attempt {part['attempts']}: pool process {pid} on {host} SIGKILLed")
        time.sleep(0.2)
    return kills


# --- 6. scale --------------------------------------------------------------------------------------


SCALE_CONFIGURATIONS: list[tuple[str, tuple[str, ...], dict[str, str]]] = [
    ("scale: 1 worker host", ("worker1",), {}),
    ("scale: 2 worker hosts", WORKER_HOSTS, {}),
    ("scale: 2 worker hosts, 32 partitions", WORKER_HOSTS, {"IAAS_TASK_PARTITIONS": SHARED_PARTITIONS}),
]


def scale(bench: Bench) -> list[Outcome]:
    """Each configuration ``scale_repeats`` times, in turn (1, 2, 32, 1, 2, 32, ...: a
    drift of the machine's load falls on all of them), a fresh seed each time."""
    sizes = bench.sizes
    outcomes = {name: Outcome(name) for name, _, _ in SCALE_CONFIGURATIONS}
    for repeat in range(1, sizes.scale_repeats + 1):
        for name, hosts, env in SCALE_CONFIGURATIONS:
            scale_once(bench, outcomes[name], repeat, hosts, env)
    base = outcomes[SCALE_CONFIGURATIONS[0][0]].measured["services_per_s"]
    for outcome in outcomes.values():
        rate = outcome.measured["services_per_s"]
        outcome.measured["ratio_to_one_host"] = round(rate / base, 2) if base else None
        outcome.operations = (
            f"{sizes.scale_servers:,} servers metered, {sizes.scale_repeats} run(s): "
            f"median {outcome.measured['duration_s']} s, {rate} services/s"
        )
        outcome.recover_note = "no fault"
    return list(outcomes.values())


def scale_once(
    bench: Bench, outcome: Outcome, repeat: int, hosts: Sequence[str], env: Mapping[str, str]
) -> None:
    """One timed metering run (run_job to the run's finished_at) on a fresh seed; its
    checks go into ``outcome`` marked with the repetition, its figures into its runs."""
    sizes = bench.sizes
    bench.begin("scale", **env)
    seeded = bench.seed(sizes.scale_servers, sizes.scale_wallets)
    bench.start_workers(hosts)
    run_id = bench.run_job("meter")
    run, _ = bench.finish_run(run_id, timeout=900)
    parts = bench.parts(run_id)
    backlog = bench.work_off_backlog()
    trial = Outcome(outcome.scenario)
    metering_check(bench, trial, seeded)
    finish_checks(bench, trial, backlog)
    for check, ok in trial.checks.items():
        outcome.checks[f"{check} (run {repeat})"] = ok
        if check in trial.details:
            outcome.details[f"{check} (run {repeat})"] = trial.details[check]
    duration = seconds_between(run["started_at"], run["finished_at"])
    runs = outcome.measured.setdefault("runs", [])
    runs.append(
        {
            "repeat": repeat,
            "duration_s": duration,
            "services_per_s": round(sizes.scale_servers / duration, 1) if duration else None,
            "ran_on": part_words(parts),
            "seed": seeded,
            "parts": parts_table(parts),
        }
    )
    rates = sorted(r["services_per_s"] for r in runs if r["services_per_s"])
    outcome.redeliveries = (outcome.redeliveries or 0) + redeliveries(parts)
    outcome.measured.update(
        hosts=list(hosts),
        partitions=run["parts"],
        servers=sizes.scale_servers,
        duration_s=statistics.median(r["duration_s"] for r in runs),
        services_per_s=round(statistics.median(rates), 1),
        services_per_s_range=[rates[0], rates[-1]],
        ran_on=sorted({r["ran_on"] for r in runs}),
    )
    log(
        f"  {outcome.scenario} (run {repeat}): {runs[-1]['services_per_s']} services/s, "
        f"parts ran on {part_words(parts)}"
    )


SCENARIOS: dict[str, Callable[[Bench], list[Outcome]]] = {
    "worker-kill": worker_kill,
    "broker-restart": broker_restart,
    "app-cut": app_cut,
    "double-publish": double_publish,
    "poison": poison,
    "scale": scale,
}


# --- the run ------------------------------------------------------------------------------------


def smoke() -> int:
    report = Report()
    cluster = Cluster()
    started = time.monotonic()
    try:
        with timed(report, "hosts"):
            cluster.up()
            if cluster.leftovers:
                log(f"  removed an earlier run's leftovers: {', '.join(cluster.leftovers)}")
            report.check(
                "hosts created", True, ", ".join(f"{h.name} {h.address}" for h in cluster.hosts.values())
            )
        with timed(report, "data services"):
            cluster.start_data_services()
            report.check(
                "data host: PostgreSQL, Redis, RabbitMQ up",
                True,
                f"{cluster.postgres.url()}, {cluster.redis.url()}, {cluster.rabbit.node}",
            )
        isolation(report, cluster)
        with timed(report, "migrate and seed"):
            cluster.migrate()
            api_key, wallet = seed_demo(cluster, report)
        with timed(report, "app hosts"):
            apps = [cluster.start_app("app1"), cluster.start_app("app2")]
        client = cluster["client"]
        with timed(report, "API from the client"):
            api_from_the_client(report, client, apps, api_key, wallet)
        with timed(report, "cut app1"):
            cut_app_host(report, client, apps[0], apps[1])
        with timed(report, "partition client/app1"):
            partition_client_from_app(report, cluster, apps)
        with timed(report, "broker kill and restart"):
            broker_kill_and_restart(report, client, cluster.rabbit)
        with timed(report, "celery"):
            celery_if_present(report, cluster)
        with timed(report, "reconcile"):
            reconcile(report, cluster)
    except BaseException as error:
        report.check("the smoke ran to its end", False, f"{type(error).__name__}: {error}")
        if not isinstance(error, KeyboardInterrupt | SystemExit):
            traceback.print_exc()
    finally:
        with timed(report, "teardown"):
            cluster.down()
        nothing_left(report)
    report.timings["total"] = time.monotonic() - started
    report.print()
    return 0 if report.passed else 1


def code_version() -> dict:
    """The commit the app ran at, and any file of the app changed since (none, for a
    result to keep)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "app_files_changed": git("status", "--porcelain", "--", "iaas", "manage.py").splitlines(),
    }


def cluster_machine(cluster: Cluster) -> dict:
    """bench.common.machine(), its PostgreSQL questions asked of the cluster's server (from
    the data host) instead of this machine's own."""

    def connect(name: str, **kwargs: Any) -> Any:
        return cluster.postgres.connect(name, **kwargs)

    def ask() -> dict:
        with mock.patch.object(common, "connect", connect):
            return common.machine()

    return cluster["data"].call(ask)


@contextmanager
def scenario_run(bench: Bench, name: str) -> Iterator[list[Outcome]]:
    """Collects a scenario's outcomes; a scenario that raised is an outcome that failed
    (the others still run), and whatever it started is stopped."""
    outcomes: list[Outcome] = []
    started = time.monotonic()
    log(f"scenario {name}")
    try:
        yield outcomes
    except Exception as error:
        traceback.print_exc()
        outcomes.append(Outcome(name, error=f"{type(error).__name__}: {error}"))
        log(f"  FAILED: {type(error).__name__}: {error}")
    finally:
        bench.end()
        for outcome in outcomes:
            outcome.seconds = round(time.monotonic() - started, 1)


def scenarios(names: Sequence[str], sizes: Sizes) -> tuple[list[Outcome], dict]:
    """Build the cluster, run the scenarios, tear it all down."""
    cluster = Cluster()
    outcomes: list[Outcome] = []
    info: dict[str, Any] = {}
    try:
        log("cluster: hosts, data services, the migrated template")
        cluster.up()
        cluster.start_data_services()
        bench = Bench(cluster, sizes)
        bench.prepare()
        info["machine"] = cluster_machine(cluster)
        for name in names:
            with scenario_run(bench, name) as collected:
                collected.extend(SCENARIOS[name](bench))
            outcomes.extend(collected)
    finally:
        log("teardown")
        cluster.down()
    info["teardown_clean"] = not our_namespaces() and not our_links()
    return outcomes, info


def cell(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def checks_cell(outcome: Outcome) -> str:
    if outcome.error:
        return f"**error**: {outcome.error}"
    failed = [name for name, ok in outcome.checks.items() if not ok]
    verdict = "all pass" if not failed else "**FAILED**: " + "; ".join(failed)
    return f"{verdict} ({len(outcome.checks)} checks)"


def table(outcomes: Sequence[Outcome]) -> str:
    lines = [
        "| scenario | operations | redeliveries | time to recover | checks |",
        "| --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        redelivered = "" if o.redeliveries is None else str(o.redeliveries)
        if o.redeliveries_note:
            redelivered += f" ({o.redeliveries_note})"
        recover = f"{o.recover_s} s: {o.recover_note}" if o.recover_s is not None else o.recover_note
        lines.append(
            f"| {cell(o.scenario)} | {cell(o.operations)} | {cell(redelivered)} | {cell(recover)} "
            f"| {cell(checks_cell(o))} |"
        )
    return "\n".join(lines)


SCALE_NOTE = (
    "Every worker host here is a network namespace of one 2-core machine: the hosts share "
    "the same two cores and the one PostgreSQL (which does most of the work), so a second "
    "host cannot add throughput and none is expected. On hosts with cores of their own the "
    "second worker host would add its processes' share of the Python side, up to what the "
    "one PostgreSQL primary can write (bench/metering.py puts the real run near the "
    "database's own limit), and only when the run's parts reach both hosts: with the "
    "default 8 partitions on 8 quorum queues one host's consumers reserve every part (parts "
    "ran on: one host), so the second host idles whatever its cores; 32 partitions (4 a "
    "queue) spread them."
)


def scale_verdict(rows: Sequence[Outcome]) -> str:
    """What the figures say, from their spread: whether the rows' ranges overlap."""
    ranges = [o.measured["services_per_s_range"] for o in rows]
    overlap = max(low for low, _ in ranges) <= min(high for _, high in ranges)
    ratios = ", ".join(f"{o.measured['ratio_to_one_host']}" for o in rows[1:])
    if min(len(o.measured["runs"]) for o in rows) < 2:
        return f"Ratios to one host {ratios}, from one run each: no spread to judge them by."
    if overlap:
        return (
            f"Ratios to one host {ratios}: the rows' ranges over their runs overlap, so no "
            f"difference is measurable here."
        )
    return f"Ratios to one host {ratios}: the rows' ranges over their runs do not overlap."


def scale_table(outcomes: Sequence[Outcome]) -> str:
    rows = [o for o in outcomes if o.scenario.startswith("scale") and not o.error]
    if not rows:
        return ""
    lines = [
        "| configuration | servers | partitions | runs | run (s, median) | services/s median (min-max) "
        "| ratio to one host | parts ran on |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for o in rows:
        m = o.measured
        low, high = m["services_per_s_range"]
        lines.append(
            f"| {o.scenario.removeprefix('scale: ')} | {m['servers']:,} | {m['partitions']} "
            f"| {len(m['runs'])} | {m['duration_s']} | {m['services_per_s']} ({low}-{high}) "
            f"| {m['ratio_to_one_host']} | {'; '.join(m['ran_on'])} |"
        )
    return "\n".join(lines) + "\n\n" + scale_verdict(rows) + " " + SCALE_NOTE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="build, check each piece, tear down")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"of: {', '.join(SCENARIOS)}")
    parser.add_argument("--quick", action="store_true", help="smaller seeds and loads, fewer kills")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    if args.smoke:
        return smoke()
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"no scenario {', '.join(unknown)}; the scenarios: {', '.join(SCENARIOS)}")
    sizes = QUICK if args.quick else FULL
    started = time.monotonic()
    began = utcnow()
    outcomes, info = scenarios(names, sizes)
    total = round(time.monotonic() - started, 1)
    print()
    print(table(outcomes))
    scaled = scale_table(outcomes)
    if scaled:
        print()
        print(scaled)
    for outcome in outcomes:
        for note in outcome.notes:
            print(f"- {outcome.scenario}: {note}")
    path = RESULTS / f"cluster-{began:%Y%m%dT%H%M%SZ}.json"
    write_json(
        path,
        {
            "started_at": began,
            "seconds": total,
            "quick": args.quick,
            "sizes": asdict(sizes),
            "task_settings": TASK_SETTINGS,
            "code": code_version(),
            "scenarios": [asdict(o) | {"ok": o.ok} for o in outcomes],
            "table": table(outcomes),
            "scale_table": scaled,
            **info,
        },
    )
    passed = bool(outcomes) and all(o.ok for o in outcomes) and info.get("teardown_clean", False)
    verdict = "all passed" if passed else "NOT all passed"
    print(f"\n{len(outcomes)} result(s) in {total:.0f} s, {verdict}; {path}")
    return 0 if passed else 1


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C does, so the teardown in ``finally`` runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
