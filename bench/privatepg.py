"""A private PostgreSQL for the fault scripts, under var/bench-pg, on a port of its own:
restarting or killing it harms no one else. initdb and pg_ctl run as the ``postgres``
user (PostgreSQL refuses to run as root), as scripts/ensure-postgres.sh does.

The multi-host bench (bench/cluster_hosts.py) runs one on a host of its own: it listens
on that host's address (``listen``), trusts the cluster's subnet in pg_hba.conf
(``allow``), and its pg_ctl runs inside the host's network namespace (``command_prefix``,
e.g. ``ip netns exec <ns>``). The defaults are the fault scripts' server, unchanged."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

from .common import ROOT


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(f"{candidate}/{name}", os.X_OK):
            return f"{candidate}/{name}"
    raise SystemExit(f"no {name}: install PostgreSQL's server binaries (Debian: postgresql)")


class PrivatePostgres:
    def __init__(
        self,
        port: int,
        directory: Path = ROOT / "var" / "bench-pg",
        *,
        listen: str = "127.0.0.1",
        allow: str | None = None,
        command_prefix: Sequence[str] = (),
        max_connections: int = 100,
    ) -> None:
        """``listen``: the one address it listens on (and its URLs name); ``allow``: a
        network (CIDR) trusted in pg_hba.conf besides loopback; ``command_prefix``: what
        pg_ctl runs under (it starts the server, so the server runs there too)."""
        self.port = port
        self.dir = directory
        self.data = directory / "data"
        self.listen = listen
        self.allow = allow
        self.prefix = list(command_prefix)
        self.max_connections = max_connections
        self.runas = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def url(self, database: str) -> str:
        return f"postgres://postgres@{self.listen}:{self.port}/{database}"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.prefix, *self.runas, _bin("pg_ctl"), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
        )

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.runas:
            shutil.chown(self.dir, "postgres")
        subprocess.run(
            [
                *self.runas,
                _bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )

    def _trust_allowed_network(self) -> None:
        """One pg_hba.conf line trusting ``allow`` (once, however often it starts)."""
        if not self.allow:
            return
        hba = self.data / "pg_hba.conf"
        line = f"host all all {self.allow} trust"
        if line not in hba.read_text().splitlines():
            with hba.open("a") as out:
                out.write(f"{line}\n")

    def start(self) -> None:
        self.init()
        self._trust_allowed_network()
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses={self.listen} "
            f"-c max_connections={self.max_connections}"
        )
        self._pg_ctl("-l", str(self.dir / "server.log"), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown; ``immediate``: no checkpoint, recovery from the
        WAL at the next start, as after a crash."""
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("-m", mode, "-w", "stop")

    def is_up(self) -> bool:
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_up():
            if time.monotonic() > deadline:
                raise RuntimeError("the private PostgreSQL did not come up")
            time.sleep(0.2)

    def recreate_database(self, name: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
