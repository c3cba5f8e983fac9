"""Hosts for the multi-host bench (bench/cluster.py): Linux network namespaces on one
bridge, each a "machine" with an address of its own, and the services the billing core
needs on them (PostgreSQL, RabbitMQ and Redis on a data host, gunicorn on app hosts,
Celery workers and beat on theirs).

Why namespaces: ARCHITECTURE.md ("Scaling past one machine") says app servers are
stateless behind one PostgreSQL, and background work runs on Celery with RabbitMQ on any
number of hosts. Saying what happens when one of those hosts is cut off, killed or
restarted takes several machines with real network links; namespaces give that on one
box, with links we can pull, and harm no one else's services.

The layout (``LAYOUT``; the subnet ``SUBNET`` belongs to this module alone)::

    10.231.7.10  data     PostgreSQL :5432, RabbitMQ :5672, Redis :6379
    10.231.7.21  app1     gunicorn :8000          10.231.7.22  app2
    10.231.7.31  worker1  celery worker           10.231.7.32  worker2
    10.231.7.40  beat     celery beat (and where migrations and commands run)
    10.231.7.50  client   where requests come from

Isolation, by construction:

- A host's namespace has its own loopback and one interface (``eth0``) on the bridge, and
  no default route: it can reach the subnet's addresses and nothing else. 127.0.0.1 inside
  it is its own loopback, never the machine's, so the machine's PostgreSQL, RabbitMQ and
  Redis (all on 127.0.0.1) cannot be reached from a host even by mistake.
- The bridge has no address in the root namespace, so nothing on a host can reach a
  service of the root namespace either. The root namespace gets an ``unreachable`` route
  for the subnet instead: without it, a packet for 10.231.7.x sent from the root
  namespace leaves by the default route (where something on the outside network answers).
- So the orchestrating script never talks to the subnet from the root namespace: it does
  so from inside a host (``Host.call`` runs a function in a thread that entered the
  host's namespace; ``Host.spawn``/``Host.run`` start processes under ``ip netns exec``).
- Every address anything is aimed at goes through ``in_subnet`` (URLs in an environment
  through ``check_url``), and a process's environment is built from nothing
  (``base_env``): no proxy variables, no DATABASE_URL of another setup leak in.

Names: namespaces and links start with ``iaas-c-`` (the bridge is ``iaas-c-br0``, the
root side of a host's link is ``iaas-c-<host>``); state and logs live under var/cluster.
``Cluster.up`` first removes what an earlier crashed run left; ``Cluster.down`` removes
everything it made (also at exit, and on Ctrl-C through the caller's ``finally``).

Needs root (namespaces, links). Usage::

    with Cluster() as cluster:               # hosts and bridge; torn down on leaving
        cluster.start_data_services()        # PostgreSQL, Redis, RabbitMQ on "data"
        cluster.migrate()                    # from the beat host
        app = cluster.start_app("app1")
        worker = cluster.start_worker("worker1", concurrency=2)
        client = cluster["client"]
        print(client.http("GET", app.url("/healthz")))   # a request from the client host
        cluster["app1"].cut()                # pull app1's cable ...
        cluster["app1"].restore()            # ... and plug it back
        partition(client, cluster["app1"])   # only these two lose each other; heal(...)
        worker.kill()                        # SIGKILL, the worker's pool included
        cluster.rabbit.kill(); cluster.rabbit.start()
        cluster.postgres.stop("immediate"); cluster.postgres.start()
        rows = cluster.postgres.query("SELECT count(*) FROM cloud_server")
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import fcntl
import functools
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .common import ROOT
from .privatepg import PrivatePostgres

SUBNET = ipaddress.IPv4Network("10.231.7.0/24")
PREFIX = "iaas-c-"
BRIDGE = f"{PREFIX}br0"
HOST_INTERFACE = "eth0"  # a host's end of its link, inside its namespace
NOBODYS_MAC = "02:00:00:00:de:ad"  # a locally administered address no interface here has
CLUSTER_DIR = ROOT / "var" / "cluster"
VENV_BIN = ROOT / ".venv" / "bin"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # the scripts themselves: /usr/sbin's wrappers `su rabbitmq`
DATABASE = "iaas_cluster"

LAYOUT: dict[str, str] = {
    "data": "10.231.7.10",
    "app1": "10.231.7.21",
    "app2": "10.231.7.22",
    "worker1": "10.231.7.31",
    "worker2": "10.231.7.32",
    "beat": "10.231.7.40",
    "client": "10.231.7.50",
}

T = TypeVar("T")


# --- addresses -------------------------------------------------------------------------------


def in_subnet(address: str) -> str:
    """``address`` when it is a host address of the cluster's subnet, else ValueError.
    Every address the cluster aims anything at goes through here: nothing it starts or
    calls can reach a service outside the cluster by mistake. Names are refused too (they
    would be resolved outside our control)."""
    ip = ipaddress.ip_address(address)
    if ip not in SUBNET or ip in (SUBNET.network_address, SUBNET.broadcast_address):
        raise ValueError(f"{address} is not a host address of the cluster's subnet {SUBNET}")
    return address


def check_url(url: str) -> str:
    """``url`` when its host is in the cluster's subnet (see ``in_subnet``)."""
    host = urlsplit(url).hostname
    if not host:
        raise ValueError(f"{url!r} names no host")
    in_subnet(host)
    return url


def check_env(env: Mapping[str, str]) -> Mapping[str, str]:
    """Every ``*_URL`` of an environment must point into the subnet."""
    for key, value in env.items():
        if key.endswith("_URL") and value:
            check_url(value)
    return env


def base_env(**extra: str) -> dict[str, str]:
    """A process's whole environment, built from nothing: the caller's (proxy variables, a
    DATABASE_URL of another setup, DJANGO_SETTINGS_MODULE) never leaks in."""
    env = {
        "PATH": SYSTEM_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(CLUSTER_DIR / "home"),
        **extra,
    }
    check_env(env)
    return env


# --- waiting ---------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something true; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


# --- the root namespace: namespaces, links, the bridge ---------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``ip`` in the root namespace; a failure says what ip said."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def our_namespaces() -> list[str]:
    lines = ip("netns", "list").stdout.splitlines()
    return [line.split()[0] for line in lines if line.startswith(PREFIX)]


def our_links() -> list[str]:
    names = [
        line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link", "show").stdout.splitlines()
    ]
    return [name for name in names if name.startswith(PREFIX)]


def pids_in(netns: str) -> list[int]:
    """The processes whose network namespace is ``netns`` (never this one)."""
    result = ip("netns", "pids", netns, check=False)
    return [int(pid) for pid in result.stdout.split() if int(pid) != os.getpid()]


def kill_everything_in(netns: str, timeout: float = 15) -> None:
    """SIGKILL every process left in one of our namespaces (only ours: the name has our
    prefix), and wait until they are gone."""
    if not netns.startswith(PREFIX):
        raise ValueError(f"{netns} is not one of ours")
    for pid in pids_in(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pids_in(netns), timeout=timeout, what=f"processes in {netns} gone")


def remove_leftovers() -> list[str]:
    """Remove what a run that crashed may have left: our namespaces (and whatever still
    runs in them), our links and bridge, our route. Returns what it removed."""
    removed = []
    for netns in our_namespaces():
        kill_everything_in(netns)
        ip("netns", "delete", netns, check=False)
        removed.append(f"namespace {netns}")
    for link in our_links():
        if link != BRIDGE:
            ip("link", "delete", link, check=False)
            removed.append(f"link {link}")
    if BRIDGE in our_links():
        ip("link", "delete", BRIDGE, check=False)
        removed.append(f"bridge {BRIDGE}")
    if ip("route", "show", "table", "main", "exact", str(SUBNET)).stdout.startswith("unreachable"):
        ip("route", "delete", "unreachable", str(SUBNET), check=False)
        removed.append(f"route {SUBNET}")
    return removed


def ensure_subnet_free() -> None:
    """Refuse to start when anything else on this machine uses our subnet."""
    used = ip("-o", "-4", "addr", "show", "to", str(SUBNET)).stdout.strip()
    routed = ip("route", "show", "table", "main", "exact", str(SUBNET)).stdout.strip()
    if used or routed:
        raise RuntimeError(f"{SUBNET} is in use on this machine:\n{used}\n{routed}")


def create_bridge() -> None:
    """The switch every host is cabled to: no address (the root namespace is not on the
    subnet), no STP (a port forwards as soon as it is up), and the subnet unreachable
    from the root namespace (see the module's docstring)."""
    ip("link", "add", "name", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    ip("link", "set", BRIDGE, "up")
    ip("route", "add", "unreachable", str(SUBNET))


# --- network namespaces from Python ---------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(netns: str) -> None:
    """Move the calling thread (only it) into ``netns``. A socket it then opens belongs
    to that namespace for its life, whichever thread uses it later."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({netns}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def call_in_netns(netns: str, fn: Callable[..., T], *args: Any, timeout: float = 60, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a new thread that first entered ``netns``; its result,
    or its exception raised here. TimeoutError when it runs longer than ``timeout``."""
    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            enter_netns(netns)
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as error:  # handed to the caller
            outcome["error"] = error

    thread = threading.Thread(target=body, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{getattr(fn, '__name__', fn)} in {netns}: not within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def can_connect(address: str, port: int, timeout: float = 1.0) -> bool:
    """A TCP connection to ``address:port`` opens (from the calling thread's namespace)."""
    try:
        with socket.create_connection((in_subnet(address), port), timeout=timeout):
            return True
    except OSError:
        return False


# --- HTTP (standard library only) ------------------------------------------------------------


@dataclass
class Answer:
    """An HTTP exchange: the status, or ``status=None`` and ``error`` when none came
    (refused, timed out, reset)."""

    status: int | None
    body: Any = None
    replayed: bool = False
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def __str__(self) -> str:
        if self.status is None:
            return f"no answer ({self.error}, {self.seconds:.2f} s)"
        return f"{self.status}{' replayed' if self.replayed else ''} ({self.seconds:.2f} s)"


def http_request(
    method: str,
    url: str,
    *,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> Answer:
    """One request on a fresh connection; a JSON body in and out. Never raises for the
    network: no answer is an ``Answer`` with ``status=None``."""
    parts = urlsplit(check_url(url))
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    all_headers = {"Accept": "application/json", **(headers or {})}
    payload = None
    if body is not None:
        payload = json.dumps(body)
        all_headers["Content-Type"] = "application/json"
    started = time.monotonic()
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request(method, path or "/", body=payload, headers=all_headers)
        raw = conn.getresponse()
        data = raw.read()
    except (OSError, http.client.HTTPException) as error:
        return Answer(None, error=f"{type(error).__name__}: {error}", seconds=time.monotonic() - started)
    finally:
        conn.close()
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = data.decode(errors="replace")[:500]
    replayed = raw.getheader("Idempotent-Replayed") == "true"
    return Answer(raw.status, parsed, replayed, seconds=time.monotonic() - started)


# --- processes on a host ---------------------------------------------------------------------


class Process:
    """A process started on a host. It leads a process group of its own, so a signal
    reaches it and every child it forked (gunicorn's workers, celery's pool, beam.smp
    under rabbitmq-server), and nothing else."""

    def __init__(self, name: str, popen: subprocess.Popen, log: Path | None) -> None:
        self.name, self.popen, self.log = name, popen, log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: int) -> None:
        """Signal the group, as long as its leader has not been reaped (until then its id
        cannot name anyone else's group)."""
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def kill(self, timeout: float = 10) -> int:
        """SIGKILL: no goodbye."""
        self.send(signal.SIGKILL)
        return self.wait(timeout)

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM, then SIGKILL if it is not gone within ``timeout``."""
        self.send(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def log_tail(self, lines: int = 15) -> str:
        if not self.log or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.popen.returncode}"
        return f"<Process {self.name} pid {self.pid} {state}>"


class Host:
    """One "machine": a network namespace with one address on the bridge. Processes run
    on it under ``ip netns exec``; the orchestrator reaches the network from it with
    ``call`` (a thread inside the namespace)."""

    def __init__(self, name: str, address: str, logs: Path) -> None:
        self.name = name
        self.address = in_subnet(address)
        self.netns = f"{PREFIX}{name}"
        self.veth = f"{PREFIX}{name}"  # the bridge's end of the host's cable
        if len(self.veth) > 15:
            raise ValueError(f"host name {name!r} too long for a link name")
        self.logs = logs
        self.processes: list[Process] = []
        self.is_cut = False
        self.blocked: set[str] = set()  # hosts this one's packets do not reach (``block``)

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address}>"

    # --- life -----------------------------------------------------------------------------

    def create(self) -> None:
        """The namespace, its cable to the bridge (``eth0`` inside), its address; loopback up."""
        ip("netns", "add", self.netns)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", HOST_INTERFACE, "netns", self.netns)
        ip("link", "set", self.veth, "master", BRIDGE, "up")
        ip("-n", self.netns, "addr", "add", f"{self.address}/{SUBNET.prefixlen}", "dev", HOST_INTERFACE)
        ip("-n", self.netns, "link", "set", HOST_INTERFACE, "up")
        ip("-n", self.netns, "link", "set", "lo", "up")

    def destroy(self) -> None:
        """Kill whatever still runs on it, remove its cable and its namespace."""
        for process in self.processes:
            process.send(signal.SIGKILL)
        if self.netns in our_namespaces():
            kill_everything_in(self.netns)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        ip("link", "delete", self.veth, check=False)
        ip("netns", "delete", self.netns, check=False)

    # --- running things on it ---------------------------------------------------------------

    def command(self, argv: Sequence[str | Path]) -> list[str]:
        """``argv`` as run on this host."""
        return ["ip", "netns", "exec", self.netns, *map(str, argv)]

    def spawn(
        self,
        argv: Sequence[str | Path],
        *,
        env: Mapping[str, str],
        log: Path | None = None,
        name: str | None = None,
        cwd: Path = ROOT,
    ) -> Process:
        """Start ``argv`` on this host with exactly ``env`` (see ``base_env``), its output
        to ``log``; the handle is also kept for teardown."""
        check_env(env)
        name = name or Path(str(argv[0])).name
        out = subprocess.DEVNULL
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = log.open("ab")
        try:
            popen = subprocess.Popen(
                self.command(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log is not None:
                out.close()
        process = Process(f"{self.name}/{name}", popen, log)
        self.processes.append(process)
        return process

    def run(
        self,
        argv: Sequence[str | Path],
        *,
        env: Mapping[str, str],
        timeout: float = 120,
        check: bool = True,
        cwd: Path = ROOT,
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` on this host to completion; its output captured (text). A failure
        (``check``) raises with the tail of what it printed."""
        check_env(env)
        result = subprocess.run(
            self.command(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode:
            said = (result.stdout + result.stderr)[-3000:]
            raise RuntimeError(
                f"on {self.name}: {' '.join(map(str, argv))} exited {result.returncode}\n{said}"
            )
        return result

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 60, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` run from this host's network (a thread in its namespace):
        what it connects to, it connects to as this host."""
        return call_in_netns(self.netns, fn, *args, timeout=timeout, **kwargs)

    def http(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> Answer:
        """An HTTP request from this host (see ``http_request``)."""
        request = functools.partial(http_request, method, url, body=body, headers=headers, timeout=timeout)
        return self.call(request, timeout=timeout + 5)

    def can_connect(self, address: str, port: int, timeout: float = 1.0) -> bool:
        """A TCP connection from this host to ``address:port`` opens."""
        return self.call(can_connect, address, port, timeout, timeout=timeout + 5)

    def wait_port(self, address: str, port: int, *, timeout: float, what: str) -> None:
        wait_until(lambda: self.can_connect(address, port), timeout=timeout, what=what)

    # --- its cable ----------------------------------------------------------------------------

    def cut(self) -> None:
        """Pull the host's cable at the switch (the bridge's end of its link goes down):
        packets to and from it are dropped, connections hang and time out rather than
        being refused; its processes go on running and notice nothing but silence."""
        ip("link", "set", self.veth, "down")
        self.is_cut = True

    def restore(self) -> None:
        """Plug the cable back in (TCP connections that did not time out meanwhile resume)."""
        ip("link", "set", self.veth, "up")
        self.is_cut = False

    def block(self, other: Host) -> None:
        """Stop this host's packets to ``other`` only: its neighbour entry for ``other``
        becomes a hardware address nobody has, so the switch delivers them nowhere. TCP
        between the two then hangs either way (replies cannot come back); the rest of the
        subnet is unaffected. (This kernel has no netfilter tools and no tc classifiers:
        the neighbour table is what is left to drop packets silently.)"""
        ip(
            "-n", self.netns, "neigh", "replace", other.address,
            "lladdr", NOBODYS_MAC, "dev", HOST_INTERFACE, "nud", "permanent",
        )  # fmt: skip
        self.blocked.add(other.name)

    def unblock(self, other: Host) -> None:
        """Undo ``block``: the next packet to ``other`` asks for its real address again."""
        ip("-n", self.netns, "neigh", "delete", other.address, "dev", HOST_INTERFACE, check=False)
        self.blocked.discard(other.name)

    def log_path(self, what: str) -> Path:
        return self.logs / f"{self.name}-{what}.log"


# --- the data host's services ----------------------------------------------------------------


class Postgres:
    """The cluster's PostgreSQL: bench/privatepg.py's server under ``directory``, listening
    on the data host's address (5432 there: the machine's own 5432 is another namespace's),
    trusting the subnet, started inside the host's namespace."""

    def __init__(self, host: Host, directory: Path, *, port: int = 5432, max_connections: int = 100) -> None:
        self.host = host
        self.server = PrivatePostgres(
            port,
            directory,
            listen=host.address,
            allow=str(SUBNET),
            command_prefix=host.command([]),
            max_connections=max_connections,
        )

    def url(self, database: str = DATABASE) -> str:
        return check_url(self.server.url(database))

    def start(self, timeout: float = 60) -> None:
        self.server.start()
        self.host.call(self.server.wait_up, timeout, timeout=timeout + 5)

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clean; ``immediate``: as after a crash (recovery from the WAL at start)."""
        self.server.stop(mode)

    def recreate_database(self, name: str = DATABASE) -> None:
        self.host.call(self.server.recreate_database, name)

    def copy_database(self, name: str, template: str) -> None:
        """Drop ``name`` (its sessions ended) and create it again as a copy of ``template``
        (CREATE DATABASE ... TEMPLATE: a migrated database in a second, no migrations)."""

        def copy() -> None:
            import psycopg

            with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

        self.host.call(copy)

    def connect(self, database: str = DATABASE, **kwargs: Any) -> Any:
        """A psycopg connection to ``database``; call it from a host's thread (``Host.call``)."""
        import psycopg

        return psycopg.connect(self.url(database), connect_timeout=5, **kwargs)

    def query(self, sql: str, params: Sequence[Any] = (), *, database: str = DATABASE) -> list[tuple]:
        """Rows of one statement, asked from the data host itself."""

        def fetch() -> list[tuple]:
            import psycopg

            with psycopg.connect(self.url(database), connect_timeout=5) as conn:
                return conn.execute(sql, params).fetchall()

        return self.host.call(fetch)


class Redis:
    """A Redis of the cluster's own (where the app's throttles count), no persistence."""

    def __init__(self, host: Host, directory: Path, *, port: int = 6379) -> None:
        self.host, self.dir, self.port = host, directory, port
        self.process: Process | None = None

    def url(self, db: int = 0) -> str:
        return check_url(f"redis://{self.host.address}:{self.port}/{db}")

    def start(self, timeout: float = 20) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [
            "redis-server",
            "--bind", self.host.address,
            "--port", str(self.port),
            "--protected-mode", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
        ]  # fmt: skip
        self.process = self.host.spawn(argv, env=base_env(), log=self.host.log_path("redis"), name="redis")
        self.host.wait_port(self.host.address, self.port, timeout=timeout, what="Redis listening")

    def stop(self) -> None:
        if self.process:
            self.process.terminate(10)


class RabbitNode:
    """A RabbitMQ node of the cluster's own on the data host, a cluster of one (enough for
    quorum queues), its state under ``directory`` (kept across a kill and a restart).

    Its name is ``rabbit@<host address>`` with long names: Erlang accepts an IP address as
    a long name's host part, so nothing needs resolving inside the namespace (a short name
    needs a host name that resolves there; /etc/hosts is the machine's, where ``localhost``
    and the machine's name are 127.0.0.1, the namespace's own loopback: it would work, but
    the node would have the same name as the machine's). epmd is started by the node inside
    the namespace and listens there only. The CLI (rabbitmqctl) runs on the same host with
    the same environment: same node name, long names, cookie (HOME is private, the cookie
    written there before the first start). The machine's /etc/rabbitmq/rabbitmq-env.conf
    (NODENAME, ERL_EPMD_ADDRESS, ERL_FLAGS binding distribution to 127.0.0.1) is skipped by
    pointing RABBITMQ_CONF_ENV_FILE to an empty file of ours. Its user (``iaas``, full
    permissions on ``/``) is the node's default user, made at its first boot; there is no
    ``guest``."""

    def __init__(
        self,
        host: Host,
        directory: Path,
        *,
        user: str = "iaas",
        password: str = "iaas",
        port: int = 5672,
        dist_port: int = 25672,
    ) -> None:
        self.host, self.dir = host, directory
        self.user, self.password, self.port, self.dist_port = user, password, port, dist_port
        self.node = f"rabbit@{host.address}"
        self.process: Process | None = None

    def url(self) -> str:
        return check_url(f"amqp://{self.user}:{self.password}@{self.host.address}:{self.port}//")

    def env(self) -> dict[str, str]:
        return base_env(
            HOME=str(self.dir / "home"),
            RABBITMQ_CONF_ENV_FILE=str(self.dir / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_USE_LONGNAME="true",
            RABBITMQ_NODE_IP_ADDRESS=self.host.address,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.dir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
        )

    def _write_files(self) -> None:
        """Configuration, no plugins, an empty env file, the cookie (once)."""
        for sub in ("home", "mnesia", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "rabbitmq-env.conf").write_text("# empty: the machine's /etc/rabbitmq one is not ours\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.host.address}:{self.port}\n"
            f"default_user = {self.user}\n"
            f"default_pass = {self.password}\n"
            "default_permissions.configure = .*\n"
            "default_permissions.read = .*\n"
            "default_permissions.write = .*\n"
            "default_user_tags.administrator = true\n"
        )
        cookie = self.dir / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20).upper())
            cookie.chmod(0o400)

    def start(self, timeout: float = 90) -> None:
        """Start the node (its data kept from an earlier run of it) and wait until it answers."""
        self._write_files()
        self.process = self.host.spawn(
            [RABBITMQ_BIN / "rabbitmq-server"],
            env=self.env(),
            log=self.host.log_path("rabbitmq"),
            name="rabbitmq",
            cwd=self.dir,
        )
        self.wait_up(timeout)

    def wait_up(self, timeout: float = 90) -> None:
        """Until ``rabbitmqctl await_startup`` says it booted and its AMQP port opens.
        await_startup fails at once while the node has not registered with epmd yet, so it
        is asked again until the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process and not self.process.alive():
                raise RuntimeError(f"RabbitMQ exited:\n{self.process.log_tail()}")
            left = deadline - time.monotonic()
            booted = self.ctl("await_startup", "--timeout", str(max(1, min(10, int(left)))), check=False)
            if booted.returncode == 0 and self.host.can_connect(self.host.address, self.port):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"RabbitMQ not up within {timeout:g} s: {booted.stderr[-500:]}")
            time.sleep(0.5)

    def is_up(self) -> bool:
        return self.host.can_connect(self.host.address, self.port)

    def kill(self, timeout: float = 10) -> None:
        """kill -9 of the node (beam.smp and the script that started it: one process group),
        as a crash or an OOM kill would; returns once its AMQP port refuses. epmd stays, as
        it would on a real host."""
        if self.process:
            self.process.kill()
        wait_until(lambda: not self.is_up(), timeout=timeout, what="RabbitMQ's port closed after the kill")

    def stop(self, timeout: float = 30) -> None:
        """A clean stop (the start script turns SIGTERM into ``rabbitmqctl stop``)."""
        if self.process:
            self.process.terminate(timeout)

    def ctl(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """``rabbitmqctl`` on the data host, aimed at this node."""
        return self._cli("rabbitmqctl", *args, timeout=timeout, check=check)

    def _cli(
        self, tool: str, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess:
        argv = [RABBITMQ_BIN / tool, "--longnames", "-n", self.node, *args]
        return self.host.run(argv, env=self.env(), timeout=timeout, check=check, cwd=self.dir)

    def queues(self) -> list[dict]:
        """Every queue of vhost ``/``: name, type, durable, messages (the count lags by a
        few seconds: it comes from periodic statistics)."""
        out = self.ctl("list_queues", "-q", "--formatter", "json", "name", "type", "durable", "messages")
        return json.loads(out.stdout or "[]")

    def raft_states(self, queue: str) -> list[str]:
        """The Raft state of each member of quorum queue ``queue`` (here: one member)."""
        out = self._cli("rabbitmq-queues", "quorum_status", queue, "--formatter", "json", check=False)
        try:
            return [member["Raft State"] for member in json.loads(out.stdout)]
        except (ValueError, KeyError, TypeError):
            return []

    def wait_quorum_leaders(self, timeout: float = 30) -> None:
        """Until every quorum queue has a Raft leader again (after a start). The queue
        list's ``leader`` column is the queue record's and says nothing of Raft's state."""
        for queue in [q["name"] for q in self.queues() if q.get("type") == "quorum"]:
            try:
                wait_until(
                    lambda q=queue: "leader" in self.raft_states(q), timeout=timeout, what=f"{queue}'s leader"
                )
            except TimeoutError:
                raise TimeoutError(
                    f"quorum queue {queue} has no Raft leader {timeout:g} s after the start "
                    f"(states {self.raft_states(queue)}); declared just before a kill? "
                    f"see DECLARE_SETTLE_SECONDS"
                ) from None


# --- the broker seen from a client (run these with Host.call) --------------------------------

# A quorum queue declared less than about a second before the node is SIGKILLed can come
# back broken: its record is there, but Ra's registry of queue servers had not been
# written yet, so the node restarts it as a new, empty member that knows no cluster, never
# elects a leader, and leaves every command waiting ("leader call - leader not known" in
# the node's log). Measured on RabbitMQ 3.10.8: broken at 0.5 s, fine from 1 s. A confirmed
# message to a settled queue survives a kill at once. Wait this long after declaring
# before killing the node.
DECLARE_SETTLE_SECONDS = 2.0


def amqp_connection(url: str, **transport_options: Any) -> Any:
    """A kombu connection that never waits forever: connect, reads and writes time out."""
    import kombu

    options = {"read_timeout": 10, "write_timeout": 10, **transport_options}
    return kombu.Connection(check_url(url), connect_timeout=5, transport_options=options)


def declare_quorum_queue(url: str, name: str) -> None:
    """A durable quorum queue ``name`` bound to a direct exchange of the same name."""
    with amqp_connection(url) as conn:
        _quorum_queue(name)(conn.default_channel).declare()


def publish_persistent(url: str, name: str, payload: dict) -> None:
    """One persistent message to queue ``name``, confirmed by the broker before returning."""
    with amqp_connection(url, confirm_publish=True) as conn:
        queue = _quorum_queue(name)
        conn.Producer().publish(
            payload, exchange=queue.exchange, routing_key=name, delivery_mode=2, retry=False, timeout=10
        )


def queue_depth(url: str, name: str) -> int:
    """The messages ready in queue ``name`` (a passive declare: exact, unlike the queue
    list's periodic statistics; messages delivered and not yet acknowledged are not
    counted). -1 when the queue does not exist."""
    import amqp

    with amqp_connection(url) as conn:
        try:
            return conn.default_channel.queue_declare(queue=name, passive=True).message_count
        except amqp.exceptions.NotFound:
            return -1


def take_message(url: str, name: str) -> Any:
    """The next message of queue ``name`` (acknowledged), or None."""
    with amqp_connection(url) as conn:
        message = _quorum_queue(name)(conn.default_channel).get(no_ack=False)
        if message is None:
            return None
        message.ack()
        return message.payload


def _quorum_queue(name: str) -> Any:
    import kombu

    exchange = kombu.Exchange(name, type="direct", durable=True)
    return kombu.Queue(
        name, exchange=exchange, routing_key=name, durable=True, queue_arguments={"x-queue-type": "quorum"}
    )


# --- the app on its hosts --------------------------------------------------------------------


class AppServer:
    """gunicorn serving ``iaas.wsgi`` on an app host's address, as bench/client.py's
    ``Gunicorn`` does on 127.0.0.1."""

    def __init__(
        self,
        host: Host,
        env: Mapping[str, str],
        *,
        port: int = 8000,
        workers: int = 2,
        gunicorn_args: Sequence[str] = (),
    ) -> None:
        """``gunicorn_args``: more options (e.g. ``--config bench/gunicorn_faults.py``)."""
        self.host, self.env, self.port, self.workers = host, env, port, workers
        self.gunicorn_args = list(gunicorn_args)
        self.process: Process | None = None

    def url(self, path: str = "/") -> str:
        return check_url(f"http://{self.host.address}:{self.port}{path}")

    def start(self, timeout: float = 60) -> None:
        """Start it (again, after a kill) and wait until it answers /healthz, asked from its
        own host, so this works while the host is cut off too. (/readyz would also wait
        for the database and the broker.)"""
        argv = [
            VENV_BIN / "gunicorn",
            "iaas.wsgi",
            "--chdir", ROOT,
            "--bind", f"{self.host.address}:{self.port}",
            "--workers", str(self.workers),
            "--timeout", "30",
            "--graceful-timeout", "5",
            # gunicorn 27's control socket is one path per user: another gunicorn may use it.
            "--no-control-socket",
            *self.gunicorn_args,
        ]  # fmt: skip
        self.process = self.host.spawn(
            argv, env=self.env, log=self.host.log_path("gunicorn"), name="gunicorn"
        )
        deadline = time.monotonic() + timeout
        while True:
            if not self.process.alive():
                raise RuntimeError(f"gunicorn on {self.host.name} exited:\n{self.process.log_tail()}")
            if self.host.http("GET", self.url("/healthz"), timeout=2).status == 200:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"gunicorn on {self.host.name}: no /healthz within {timeout:g} s")
            time.sleep(0.3)

    def kill(self) -> None:
        if self.process:
            self.process.kill()

    def stop(self) -> None:
        if self.process:
            self.process.terminate(15)


# --- the cluster -----------------------------------------------------------------------------


class Cluster:
    """The hosts of ``layout`` on one bridge, the services started on them, and a teardown
    that removes it all. One at a time on a machine (a lock under var/cluster)."""

    def __init__(self, layout: Mapping[str, str] = LAYOUT, directory: Path = CLUSTER_DIR) -> None:
        self.dir = directory
        self.logs = directory / "logs"
        self.hosts = {name: Host(name, address, self.logs) for name, address in layout.items()}
        self.secret_key = secrets.token_urlsafe(48)  # one for every app host: 64 characters
        self.fernet_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()  # IAAS_SECRET_KEYS
        self.postgres: Postgres | None = None
        self.redis: Redis | None = None
        self.rabbit: RabbitNode | None = None
        self.apps: list[AppServer] = []
        self.database = DATABASE  # the one app_env points every Django process at
        self.leftovers: list[str] = []  # what up() removed of an earlier run
        self._lock: Any = None
        self._up = False

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __enter__(self) -> Cluster:
        return self.up()

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    # --- up and down ----------------------------------------------------------------------------

    def up(self, *, fresh: bool = True) -> Cluster:
        """Remove an earlier run's leftovers, then the bridge and the hosts. ``fresh``: the
        data directories and logs of an earlier run are wiped too."""
        if os.geteuid() != 0:
            raise SystemExit("the cluster needs root (network namespaces)")
        self._take_lock()  # from here on, whatever has our names is ours to remove
        self._up = True
        atexit.register(self.down)
        self.leftovers = remove_leftovers()
        ensure_subnet_free()
        if fresh:
            for sub in ("pg", "rabbitmq", "redis", "beat", "logs", "home"):
                shutil.rmtree(self.dir / sub, ignore_errors=True)
        for sub in ("logs", "home", "beat"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        create_bridge()
        for host in self.hosts.values():
            host.create()
        return self

    def down(self) -> None:
        """Stop everything (politely, briefly), then remove the hosts, the bridge and the
        route. Safe to call again (atexit does), also after a failed or interrupted ``up``
        or ``down``: each step is carried on past a failure."""
        if not self._up:
            return
        _attempt("stop processes", self._stop_processes)
        if self.postgres:
            _attempt("stop PostgreSQL", self.postgres.stop)
        for host in self.hosts.values():
            _attempt(f"remove host {host.name}", host.destroy)
        _attempt("remove leftovers", remove_leftovers)
        self._up = False
        self._release_lock()

    def _stop_processes(self, grace: float = 10) -> None:
        """SIGTERM to every process started on a host; SIGKILL to those not gone in ``grace``."""
        processes = [process for host in self.hosts.values() for process in host.processes]
        for process in processes:
            process.send(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()

    def _take_lock(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = (self.dir / ".lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise SystemExit("another cluster run holds var/cluster/.lock") from None

    def _release_lock(self) -> None:
        if self._lock:
            self._lock.close()
            self._lock = None

    # --- services ------------------------------------------------------------------------------

    def start_data_services(self, host: str = "data", *, database: str = DATABASE) -> None:
        """PostgreSQL (with an empty ``database``), Redis and RabbitMQ on one host."""
        data = self.hosts[host]
        self.postgres = Postgres(data, self.dir / "pg")
        self.postgres.start()
        self.postgres.recreate_database(database)
        self.redis = Redis(data, self.dir / "redis")
        self.redis.start()
        self.rabbit = RabbitNode(data, self.dir / "rabbitmq")
        self.rabbit.start()

    def app_env(self, *, settings: str = "iaas.settings.production", **extra: str) -> dict[str, str]:
        """The environment of every Django process of the cluster (app, worker, beat,
        commands): production settings, the data host's database, broker and Redis."""
        if not (self.postgres and self.redis and self.rabbit):
            raise RuntimeError("start_data_services first")
        app_addresses = [h.address for name, h in self.hosts.items() if name.startswith("app")]
        return base_env(
            DJANGO_SETTINGS_MODULE=settings,
            SECRET_KEY=self.secret_key,
            IAAS_SECRET_KEYS=self.fernet_key,
            ALLOWED_HOSTS=",".join(app_addresses),
            SECURE_SSL_REDIRECT="false",
            DATABASE_URL=self.postgres.url(self.database),
            CELERY_BROKER_URL=self.rabbit.url(),
            REDIS_URL=self.redis.url(),
            IAAS_CACHE_KEY_PREFIX="iaas-cluster",
            IAAS_PAYMENT_PROVIDER="iaas.billing.payments.SandboxPaymentProvider",
            LOG_LEVEL="INFO",
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONUNBUFFERED="1",
            **extra,
        )

    def manage(
        self,
        host: str,
        *args: str,
        settings: str = "iaas.settings.production",
        timeout: float = 300,
        check: bool = True,
        **env: str,
    ) -> subprocess.CompletedProcess:
        """``manage.py <args>`` on ``host``, to completion."""
        argv = [VENV_BIN / "python", ROOT / "manage.py", *args]
        return self.hosts[host].run(
            argv, env=self.app_env(settings=settings, **env), timeout=timeout, check=check
        )

    def migrate(self, host: str = "beat") -> None:
        self.manage(host, "migrate", "--no-input", "-v0")

    def start_app(
        self, host: str, *, port: int = 8000, workers: int = 2, gunicorn_args: Sequence[str] = (), **env: str
    ) -> AppServer:
        """gunicorn on ``host``, answering /healthz; ``env``: more environment for it."""
        app = AppServer(
            self.hosts[host], self.app_env(**env), port=port, workers=workers, gunicorn_args=gunicorn_args
        )
        app.start()
        self.apps.append(app)
        return app

    def start_worker(
        self,
        host: str,
        queues: Sequence[str] | None = None,
        concurrency: int = 1,
        *,
        name: str = "worker",
        args: Sequence[str] = (),
        **env: str,
    ) -> Process:
        """A Celery worker (``iaas/celery.py``'s app) named ``<name>@<host>``, its log
        var/cluster/logs/<host>-<name>.log; ``queues``: only those (``-Q``); ``args``: more
        options. Returns once started, not once ready (``wait_for_log(p, " ready.")``)."""
        argv = [
            VENV_BIN / "celery", "-A", "iaas", "worker",
            "-l", "INFO",
            "--concurrency", str(concurrency),
            "-n", f"{name}@{host}",
            *args,
        ]  # fmt: skip
        if queues:
            argv += ["-Q", ",".join(queues)]
        on = self.hosts[host]
        return on.spawn(argv, env=self.app_env(**env), log=on.log_path(name), name=f"celery-{name}")

    def start_beat(self, host: str = "beat", *, args: Sequence[str] = (), **env: str) -> Process:
        """Celery beat, its schedule file under var/cluster/beat (``wait_for_log(p,
        "beat: Starting")``)."""
        argv = [
            VENV_BIN / "celery", "-A", "iaas", "beat",
            "-l", "INFO",
            "-s", self.dir / "beat" / f"celerybeat-schedule-{host}",
            *args,
        ]  # fmt: skip
        on = self.hosts[host]
        return on.spawn(argv, env=self.app_env(**env), log=on.log_path("beat"), name="celery-beat")


def partition(a: Host, b: Host) -> None:
    """Cut ``a`` and ``b`` off from each other only (both directions, silently)."""
    a.block(b)
    b.block(a)


def heal(a: Host, b: Host) -> None:
    a.unblock(b)
    b.unblock(a)


def _attempt(what: str, step: Callable[[], Any]) -> None:
    """Run one teardown step; a failure is said and the teardown goes on."""
    try:
        step()
    except Exception as error:
        print(f"teardown: {what} failed: {type(error).__name__}: {error}", flush=True)


def log_size(path: Path | None) -> int:
    """How long a log is now: where a process started next writes its first line (logs
    are appended to, so ``wait_for_log(..., since=)`` looks only at what follows)."""
    return path.stat().st_size if path and path.exists() else 0


def read_log(path: Path | None, since: int = 0) -> str:
    """A log's text from byte ``since`` on."""
    if not path or not path.exists():
        return ""
    with path.open("rb") as log:
        log.seek(since)
        return log.read().decode(errors="replace")


def wait_for_log(process: Process, text: str, *, timeout: float, since: int = 0) -> None:
    """Until ``text`` appears in the process's log (after byte ``since``: a log another
    start of the same process wrote to before); fails early when the process exits."""

    def seen() -> bool:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited {process.popen.returncode}:\n{process.log_tail()}")
        return text in read_log(process.log, since)

    wait_until(seen, timeout=timeout, what=f"{text!r} in {process.name}'s log")
