"""A private PostgreSQL for the fault scripts, under var/bench-pg, on a port of its own:
restarting or killing it harms no one else. initdb and pg_ctl run as the ``postgres``
user (PostgreSQL refuses to run as root), as scripts/ensure-postgres.sh does."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
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
    def __init__(self, port: int, directory: Path = ROOT / "var" / "bench-pg") -> None:
        self.port = port
        self.dir = directory
        self.data = directory / "data"
        self.runas = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.runas, _bin("pg_ctl"), "-D", str(self.data), *args], check=True, capture_output=True
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

    def start(self) -> None:
        self.init()
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=100"
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
