"""The billing core on several hosts: network namespaces on one bridge, built by
bench/cluster_hosts.py (see its docstring for the layout and what keeps it apart from
this machine's own services). Needs root.

    .venv/bin/python -m bench.cluster --smoke

``--smoke`` builds the cluster and shows that each piece works, then tears it all down:

1. hosts: data (PostgreSQL, Redis, RabbitMQ), app1 and app2 (gunicorn), worker1,
   worker2, beat, client; leftovers of a crashed run are removed first;
2. nothing reaches out: from a host, not the machine's PostgreSQL, RabbitMQ or Redis;
   from the root namespace, not a host;
3. migrations (from the beat host) and ``seed_demo`` (development settings: production
   refuses demo logins) against the data host's PostgreSQL;
4. from the client host, on each app host: /healthz, the plan catalog, a server bought
   with an Idempotency-Key, and that key sent again to the other app host (a replay:
   both hosts keep idempotency in the one database);
5. app1's cable pulled: requests to it get no answer while app2 still answers; plugged
   back, app1 answers again; then only the client and app1 partitioned from each other
   (app1 still reaches the database), and healed;
6. a quorum queue declared and a persistent message published (publisher confirms),
   the broker killed with SIGKILL and started again: the queue and the message are there;
7. when ``iaas/celery.py`` exists: a worker on worker1 and beat on the beat host start
   (reported, never failing the smoke: that app is another piece of work);
8. ``reconcile --fix`` from the beat host: the books hold;
9. teardown, and a check that no namespace or link of ours is left.

Every wait has a timeout; the cluster is torn down on failure, on Ctrl-C and on SIGTERM.
Logs of every process stay under var/cluster/logs until the next run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field

from .cluster_hosts import (
    CLUSTER_DIR,
    DECLARE_SETTLE_SECONDS,
    AppServer,
    Cluster,
    Host,
    RabbitNode,
    declare_quorum_queue,
    heal,
    our_links,
    our_namespaces,
    partition,
    publish_persistent,
    take_message,
    wait_for_log,
    wait_until,
)
from .common import ROOT

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


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C does, so the teardown in ``finally`` runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="build, check each piece, tear down")
    args = parser.parse_args(argv)
    if not args.smoke:
        parser.error("say what to run: --smoke (the only mode so far)")
    stop_on_sigterm()
    return smoke()


if __name__ == "__main__":
    sys.exit(main())
